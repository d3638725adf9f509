package order

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

func TestLoadConfigKeyRetention(t *testing.T) {
	for value, want := range map[string]time.Duration{"": DefaultKeyRetention, "48h": 48 * time.Hour, "90m": 90 * time.Minute} {
		cfg, err := LoadConfig(func(k string) string { return map[string]string{"IDEMPOTENCY_KEY_RETENTION": value}[k] })
		if err != nil || cfg.KeyRetention != want {
			t.Errorf("IDEMPOTENCY_KEY_RETENTION=%q: %v, %v; want %v", value, cfg.KeyRetention, err, want)
		}
	}
	for _, value := range []string{"24", "a day", "-1h", "0s"} {
		_, err := LoadConfig(func(k string) string { return map[string]string{"IDEMPOTENCY_KEY_RETENTION": value}[k] })
		if err == nil || !strings.Contains(err.Error(), "IDEMPOTENCY_KEY_RETENTION") {
			t.Errorf("IDEMPOTENCY_KEY_RETENTION=%q: %v; want an error naming the variable", value, err)
		}
	}
}

// An Idempotency-Key older than the retention is pruned, and a POST
// repeated with it places a new order, as documented; a younger key still
// answers with the first response, however often pruning runs.
func TestIdempotencyKeysExpireAfterTheRetention(t *testing.T) {
	ctx := context.Background()
	k := testenv.NewKafka(t)
	s, err := New(ctx, Config{Config: platform.Config{
		DatabaseURL: testenv.Database(t), KafkaBrokers: k.Brokers, HTTPAddr: "127.0.0.1:0",
		OrdersTopic: "orders.events", CustomersTopic: "customers.events", ShutdownTimeout: time.Second,
		ConsumerGroup: "order-service", SnapshotEvery: 100,
	}}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.bb.Pool.Close)
	if s.cfg.KeyRetention != 24*time.Hour {
		t.Fatalf("key retention %s, want 24h by default", s.cfg.KeyRetention)
	}

	post := func(key string) Placed {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(
			`{"customer_id": "0190f5a0-0000-7000-8000-0000000000c1", "items": [{"product_id": "p", "quantity": 1, "unit_price": "3.00"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var p Placed
		if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &p) != nil {
			t.Fatalf("POST /orders with key %s: %d %s", key, rec.Code, rec.Body)
		}
		return p
	}
	first := map[string]Placed{"old": post("old"), "young": post("young")}
	for key, age := range map[string]time.Duration{"old": 25 * time.Hour, "young": 23 * time.Hour} {
		if _, err := s.bb.Pool.Exec(ctx, "UPDATE idempotency_keys SET created_at = now() - $2::bigint * interval '1 microsecond' WHERE key = $1",
			key, age.Microseconds()); err != nil {
			t.Fatal(err)
		}
	}
	if again := post("old"); again != first["old"] {
		t.Fatalf("before pruning, the old key answered %+v, want the first answer %+v", again, first["old"])
	}

	// What the backbone's pruner runs for the order service.
	for range 2 {
		if n, err := PruneKeys(ctx, s.bb.Pool, s.cfg.KeyRetention, 1000); err != nil || n > 1 {
			t.Fatalf("pruned %d keys, %v", n, err)
		}
	}
	var left []string
	rows, _ := s.bb.Pool.Query(ctx, "SELECT key FROM idempotency_keys ORDER BY key")
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			t.Fatal(err)
		}
		left = append(left, key)
	}
	if rows.Err() != nil || strings.Join(left, ",") != "young" {
		t.Fatalf("keys left: %v, %v; want young only", left, rows.Err())
	}

	if again := post("young"); again != first["young"] {
		t.Errorf("the young key answered %+v, want the first answer %+v", again, first["young"])
	}
	again := post("old")
	if again.OrderID == first["old"].OrderID {
		t.Errorf("the pruned key answered with its first order %s; want a new order", again.OrderID)
	}
	if v, err := s.Get(ctx, again.OrderID); err != nil || v.Version != 1 {
		t.Errorf("the new order: %+v, %v", v, err)
	}
}
