// Package kafkaconn is how every Kafka client here connects to a cluster
// that asks for more than a TCP connection: TLS (a CA to trust, optionally a
// client certificate) and SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), read
// from the KAFKA_* variables. The services (their relay, consumers and
// dead-letter producers) and the tools that users point at a cluster (demo,
// loadgen, dlq, sagawatch) all take their options from here, so that one
// setting secures them all. The chaos check and the benchmarks run clusters
// of their own, in plaintext.
//
// Without any of the variables a client connects in plaintext without
// authenticating, as to make run's dev broker.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The SASL mechanisms a client can authenticate with.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Vars are a client's settings: KAFKA_BROKERS and the variables Load reads.
var Vars = []string{"KAFKA_BROKERS", "KAFKA_TLS", "KAFKA_TLS_CA", "KAFKA_TLS_CERT", "KAFKA_TLS_KEY",
	"KAFKA_SASL_MECHANISM", "KAFKA_USERNAME", "KAFKA_PASSWORD"}

// Config is a client's security settings.
type Config struct {
	// Mechanism is the SASL mechanism (KAFKA_SASL_MECHANISM); empty, no
	// SASL. Username and Password (KAFKA_USERNAME, KAFKA_PASSWORD) are
	// required with it.
	Mechanism          string
	Username, Password string
	// TLS connects with TLS (KAFKA_TLS=true; implied by any KAFKA_TLS_*
	// file). CAFile (KAFKA_TLS_CA) is a PEM file of the certificates to
	// trust, else the system's; CertFile and KeyFile (KAFKA_TLS_CERT,
	// KAFKA_TLS_KEY) are a client certificate for brokers that ask for one.
	TLS                       bool
	CAFile, CertFile, KeyFile string
}

// Load reads Config from getenv and checks it (Validate), files included.
func Load(getenv func(string) string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	c := Config{
		Mechanism: strings.ToUpper(get("KAFKA_SASL_MECHANISM")),
		Username:  get("KAFKA_USERNAME"),
		// A password is taken as it is: spaces may be part of it.
		Password: getenv("KAFKA_PASSWORD"),
		CAFile:   get("KAFKA_TLS_CA"),
		CertFile: get("KAFKA_TLS_CERT"),
		KeyFile:  get("KAFKA_TLS_KEY"),
	}
	c.TLS = c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	if v := get("KAFKA_TLS"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("KAFKA_TLS: %q is neither true nor false", v)
		}
		if !on && c.TLS {
			return c, errors.New("KAFKA_TLS is false but KAFKA_TLS_CA, KAFKA_TLS_CERT or KAFKA_TLS_KEY is set")
		}
		c.TLS = on
	}
	return c, c.Validate()
}

// Validate reports settings no client can connect with; it reads the TLS
// files, so that a bad path or PEM stops a service at start, not at its
// first connection.
func (c Config) Validate() error {
	switch c.Mechanism {
	case "":
		if c.Username != "" || c.Password != "" {
			return errors.New("KAFKA_USERNAME or KAFKA_PASSWORD is set without KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
	case Plain, ScramSHA256, ScramSHA512:
		if c.Username == "" || c.Password == "" {
			return fmt.Errorf("KAFKA_SASL_MECHANISM %s needs KAFKA_USERNAME and KAFKA_PASSWORD", c.Mechanism)
		}
	default:
		return fmt.Errorf("KAFKA_SASL_MECHANISM: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.Mechanism)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("KAFKA_TLS_CERT and KAFKA_TLS_KEY go together: a client certificate needs its key")
	}
	_, err := c.tlsConfig()
	return err
}

// Opts are the client options that connect as c says: none for a plain
// connection. The TLS files are read at each call (the services call it
// once, at start).
func (c Config) Opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// FromEnv is Load and Opts, for a tool's main.
func FromEnv(getenv func(string) string) ([]kgo.Opt, error) {
	c, err := Load(getenv)
	if err != nil {
		return nil, err
	}
	return c.Opts()
}

// Warning is what a service should log at start about c, or "": a password
// sent where anyone on the path can read it.
func (c Config) Warning() string {
	if c.Mechanism == Plain && !c.TLS {
		return "KAFKA_SASL_MECHANISM is PLAIN without TLS: the Kafka password crosses the network in clear; set KAFKA_TLS_CA (or KAFKA_TLS=true)"
	}
	return ""
}

// LogValue says how the client connects, never with the password.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Bool("tls", c.TLS)}
	if c.CAFile != "" {
		attrs = append(attrs, slog.String("ca", c.CAFile))
	}
	if c.CertFile != "" {
		attrs = append(attrs, slog.String("cert", c.CertFile))
	}
	if c.Mechanism != "" {
		attrs = append(attrs, slog.String("sasl", c.Mechanism), slog.String("user", c.Username))
	}
	return slog.GroupValue(attrs...)
}

// String keeps the password out of a %v.
func (c Config) String() string { return c.LogValue().String() }

func (c Config) mechanism() sasl.Mechanism {
	switch c.Mechanism {
	case Plain:
		return plain.Auth{User: c.Username, Pass: c.Password}.AsMechanism()
	case ScramSHA256:
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha256Mechanism()
	case ScramSHA512:
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism()
	}
	return nil
}

// tlsConfig is nil without TLS. kgo sets each connection's ServerName to
// the broker's host, so the broker's certificate is checked against the
// address it is dialled at.
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("KAFKA_TLS_CA: %s holds no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CERT/KAFKA_TLS_KEY: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// EnvFile reads a file of KEY=VALUE lines (make kafka-certs's admin.env,
// order.env, …; blank lines and # comments skipped) and returns a getenv
// over them, for Load.
func EnvFile(path string) (func(string) string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[strings.TrimSpace(k)] = v
		}
	}
	return func(k string) string { return env[k] }, nil
}
