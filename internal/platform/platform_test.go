package platform

import (
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	d := Defaults{DatabaseURL: "postgres://u:secret@db:5432/orders", HTTPAddr: ":8080", ConsumerGroup: "order-service"}
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	cfg, err := Load(env(nil), d)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != d.DatabaseURL || cfg.HTTPAddr != ":8080" || cfg.ConsumerGroup != "order-service" ||
		cfg.OrdersTopic != "orders.events" || cfg.CustomersTopic != "customers.events" ||
		len(cfg.KafkaBrokers) != 1 || cfg.KafkaBrokers[0] != "127.0.0.1:9092" ||
		cfg.ShutdownTimeout != 10*time.Second || cfg.SnapshotEvery != 100 || cfg.InboxRetention != 7*24*time.Hour {
		t.Errorf("defaults: %+v", cfg)
	}
	if logged := cfg.LogValue().String(); strings.Contains(logged, "secret") {
		t.Errorf("password in the log: %s", logged)
	}

	cfg, err = Load(env(map[string]string{
		"DATABASE_URL": "postgres://x@h/db", "KAFKA_BROKERS": " a:1, b:2 ,", "HTTP_ADDR": "127.0.0.1:9",
		"CONSUMER_GROUP": "g", "SNAPSHOT_EVERY": "7", "SHUTDOWN_TIMEOUT": "3s", "ORDERS_TOPIC": "o",
		"CONSUMER_INSTANCE_ID": "order-2", "INBOX_RETENTION": "48h",
	}), d)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.KafkaBrokers) != 2 || cfg.KafkaBrokers[1] != "b:2" || cfg.ConsumerGroup != "g" || cfg.SnapshotEvery != 7 ||
		cfg.ShutdownTimeout != 3*time.Second || cfg.OrdersTopic != "o" || cfg.HTTPAddr != "127.0.0.1:9" ||
		cfg.ConsumerInstance != "order-2" || cfg.InboxRetention != 48*time.Hour {
		t.Errorf("overrides: %+v", cfg)
	}

	for k, v := range map[string]string{
		"SNAPSHOT_EVERY": "many", "SHUTDOWN_TIMEOUT": "soon", "KAFKA_BROKERS": " , ",
		"DATABASE_URL": "postgres://host:notaport/db", "CONSUMER_INSTANCE_ID": "order 2",
	} {
		if _, err := Load(env(map[string]string{k: v}), d); err == nil {
			t.Errorf("%s=%q accepted", k, v)
		}
	}
	for _, v := range []string{"a week", "168", "0s", "-1h", "59m"} {
		if _, err := Load(env(map[string]string{"INBOX_RETENTION": v}), d); err == nil || !strings.Contains(err.Error(), "INBOX_RETENTION") {
			t.Errorf("INBOX_RETENTION=%q: %v; want an error naming the variable", v, err)
		}
	}
}
