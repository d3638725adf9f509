package kafkaconn_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/testenv"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad(t *testing.T) {
	ca := testenv.NewCA(t)
	client := ca.Issue(t, true)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  map[string]string
		want kafkaconn.Config
		err  string // a part of the error; "" for none
	}{
		{name: "nothing: plaintext", env: nil, want: kafkaconn.Config{}},
		{name: "scram over tls", env: map[string]string{"KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_USERNAME": "order", "KAFKA_PASSWORD": " p w ", "KAFKA_TLS_CA": ca.File},
			want: kafkaconn.Config{Mechanism: "SCRAM-SHA-512", Username: "order", Password: " p w ", TLS: true, CAFile: ca.File}},
		{name: "tls on system roots", env: map[string]string{"KAFKA_TLS": "true"}, want: kafkaconn.Config{TLS: true}},
		{name: "client certificate", env: map[string]string{"KAFKA_TLS_CERT": client.CertFile, "KAFKA_TLS_KEY": client.KeyFile},
			want: kafkaconn.Config{TLS: true, CertFile: client.CertFile, KeyFile: client.KeyFile}},
		{name: "unknown mechanism", env: map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_USERNAME": "u", "KAFKA_PASSWORD": "p"}, err: `"GSSAPI" is not PLAIN`},
		{name: "mechanism without password", env: map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_USERNAME": "u"}, err: "needs KAFKA_USERNAME and KAFKA_PASSWORD"},
		{name: "user without mechanism", env: map[string]string{"KAFKA_USERNAME": "u", "KAFKA_PASSWORD": "p"}, err: "without KAFKA_SASL_MECHANISM"},
		{name: "tls not a bool", env: map[string]string{"KAFKA_TLS": "yes please"}, err: "KAFKA_TLS"},
		{name: "tls off with a CA", env: map[string]string{"KAFKA_TLS": "false", "KAFKA_TLS_CA": ca.File}, err: "KAFKA_TLS is false"},
		{name: "missing CA file", env: map[string]string{"KAFKA_TLS_CA": "/nonexistent/ca.pem"}, err: "KAFKA_TLS_CA"},
		{name: "CA file not PEM", env: map[string]string{"KAFKA_TLS_CA": notPEM}, err: "holds no PEM certificate"},
		{name: "cert without key", env: map[string]string{"KAFKA_TLS_CERT": client.CertFile}, err: "go together"},
		{name: "key of another cert", env: map[string]string{"KAFKA_TLS_CERT": client.CertFile, "KAFKA_TLS_KEY": ca.Issue(t, true).KeyFile}, err: "KAFKA_TLS_CERT/KAFKA_TLS_KEY"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := kafkaconn.Load(env(c.env))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestThePasswordIsNeverPrinted(t *testing.T) {
	c := kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "order", Password: "s3cret-pa55", TLS: true}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "kafka", c)
	for _, s := range []string{b.String(), fmt.Sprint(c), fmt.Sprintf("%+v", c)} {
		if strings.Contains(s, "s3cret") {
			t.Fatalf("the password is in %q", s)
		}
		if !strings.Contains(s, "order") || !strings.Contains(s, "SCRAM-SHA-512") {
			t.Fatalf("%q does not say who connects how", s)
		}
	}
}

func TestWarning(t *testing.T) {
	if w := (kafkaconn.Config{Mechanism: kafkaconn.Plain, Username: "u", Password: "p"}).Warning(); !strings.Contains(w, "in clear") {
		t.Fatalf("PLAIN without TLS: warning %q", w)
	}
	for _, c := range []kafkaconn.Config{{}, {Mechanism: kafkaconn.Plain, Username: "u", Password: "p", TLS: true}, {Mechanism: kafkaconn.ScramSHA256, Username: "u", Password: "p"}} {
		if w := c.Warning(); w != "" {
			t.Fatalf("%v: warning %q", c, w)
		}
	}
}

// TestConnects connects to a kfake broker that takes TLS only and asks for
// SASL, with each mechanism, and is refused with a wrong password, a CA that
// did not sign the broker's certificate, or no TLS.
func TestConnects(t *testing.T) {
	ca := testenv.NewCA(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, false).Pair}, MinVersion: tls.VersionTLS12}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.EnableSASL(),
		kfake.Superuser(kafkaconn.Plain, "plain-user", "plain-pw"),
		kfake.Superuser(kafkaconn.ScramSHA256, "scram256-user", "scram256-pw"),
		kfake.Superuser(kafkaconn.ScramSHA512, "scram512-user", "scram512-pw"),
		kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	other := testenv.NewCA(t)

	for _, tc := range []struct {
		name string
		cfg  kafkaconn.Config
		ok   bool
		why  string // a part of a refusal's error
	}{
		{"PLAIN", kafkaconn.Config{Mechanism: kafkaconn.Plain, Username: "plain-user", Password: "plain-pw", TLS: true, CAFile: ca.File}, true, ""},
		{"SCRAM-SHA-256", kafkaconn.Config{Mechanism: kafkaconn.ScramSHA256, Username: "scram256-user", Password: "scram256-pw", TLS: true, CAFile: ca.File}, true, ""},
		{"SCRAM-SHA-512", kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "scram512-user", Password: "scram512-pw", TLS: true, CAFile: ca.File}, true, ""},
		{"wrong password", kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "scram512-user", Password: "guess", TLS: true, CAFile: ca.File}, false, "EOF"}, // kfake hangs up on a failed SCRAM exchange
		{"no SASL", kafkaconn.Config{TLS: true, CAFile: ca.File}, false, "is SASL missing?"},
		{"another CA", kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "scram512-user", Password: "scram512-pw", TLS: true, CAFile: other.File}, false, "certificate signed by unknown authority"},
		{"no TLS", kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "scram512-user", Password: "scram512-pw"}, false, "is TLS missing?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := produce(t, c.ListenAddrs(), tc.cfg)
			if tc.ok && err != nil {
				t.Fatalf("produce: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.why)) {
				t.Fatalf("error %v; want a refusal with %q", err, tc.why)
			}
		})
	}
}

// TestClientCertificate: a broker that requires a client certificate signed
// by its CA takes the one of KAFKA_TLS_CERT and refuses a client without.
func TestClientCertificate(t *testing.T) {
	ca := testenv.NewCA(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, false).Pair}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client := ca.Issue(t, true)
	cfg, err := kafkaconn.Load(env(map[string]string{"KAFKA_TLS_CA": ca.File, "KAFKA_TLS_CERT": client.CertFile, "KAFKA_TLS_KEY": client.KeyFile}))
	if err != nil {
		t.Fatal(err)
	}
	if err := produce(t, c.ListenAddrs(), cfg); err != nil {
		t.Fatalf("with the certificate: %v", err)
	}
	if err := produce(t, c.ListenAddrs(), kafkaconn.Config{TLS: true, CAFile: ca.File}); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("without a certificate: error %v; want a refusal", err)
	}
}

// produce writes one record to topic t as cfg connects, within 3 s.
func produce(t *testing.T, brokers []string, cfg kafkaconn.Config) error {
	t.Helper()
	opts, err := cfg.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...), kgo.RequestRetries(0), kgo.RecordDeliveryTimeout(3*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("x")}).FirstErr()
}

func TestEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "order.env")
	body := "# make kafka-certs\nKAFKA_BROKERS=127.0.0.1:9192\n\nKAFKA_SASL_MECHANISM=SCRAM-SHA-512\nKAFKA_USERNAME=order\nKAFKA_PASSWORD=a=b c\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv, err := kafkaconn.EnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kafkaconn.Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if want := (kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: "order", Password: "a=b c"}); c != want || getenv("KAFKA_BROKERS") != "127.0.0.1:9192" {
		t.Fatalf("got %+v and brokers %q", c, getenv("KAFKA_BROKERS"))
	}
	if _, err := kafkaconn.EnvFile(filepath.Join(t.TempDir(), "missing.env")); err == nil {
		t.Fatal("a missing file: no error")
	}
}
