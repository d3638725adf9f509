package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsaga/eventsaga/internal/kafkaconn"
)

// SecureKafka is a cluster that takes only TLS connections, authenticates
// them with SASL and authorizes every request with ACLs.
type SecureKafka struct {
	*Kafka
	// CAFile is the PEM file of the CA the brokers' certificates are
	// signed by.
	CAFile string
	// Admin is a superuser's connection; Kafka.Client connects with it.
	Admin kafkaconn.Config
}

// NewSecureKafka returns the cluster make kafka-secure runs when
// TEST_KAFKA_SECURE names its folder (its admin.env says how to reach it as
// the admin), else a kfake cluster of one broker set up the same way: TLS
// with a certificate of a CA made for the test, SASL (the admin a PLAIN
// superuser; SCRAM users are made with AlterUserSCRAMs), ACLs enforced.
func NewSecureKafka(t testing.TB) *SecureKafka {
	t.Helper()
	if dir := os.Getenv("TEST_KAFKA_SECURE"); dir != "" {
		env, err := kafkaconn.EnvFile(filepath.Join(dir, "admin.env"))
		if err != nil {
			t.Fatalf("TEST_KAFKA_SECURE: %v", err)
		}
		admin, err := kafkaconn.Load(env)
		if err != nil {
			t.Fatalf("TEST_KAFKA_SECURE: admin.env: %v", err)
		}
		return newSecure(t, strings.Split(env("KAFKA_BROKERS"), ","), true, admin)
	}
	ca := NewCA(t)
	password := rand.Text()
	c, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{ca.Issue(t, false).Pair}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser(kafkaconn.Plain, "admin", password), kfake.EnableACLs())
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	admin := kafkaconn.Config{Mechanism: kafkaconn.Plain, Username: "admin", Password: password, TLS: true, CAFile: ca.File}
	return newSecure(t, c.ListenAddrs(), false, admin)
}

func newSecure(t testing.TB, brokers []string, shared bool, admin kafkaconn.Config) *SecureKafka {
	t.Helper()
	conn, err := admin.Opts()
	if err != nil {
		t.Fatal(err)
	}
	return &SecureKafka{Kafka: &Kafka{Brokers: brokers, Shared: shared, Conn: conn}, CAFile: admin.CAFile, Admin: admin}
}

// User is how a SCRAM-SHA-512 user connects to k.
func (k *SecureKafka) User(name, password string) kafkaconn.Config {
	return kafkaconn.Config{Mechanism: kafkaconn.ScramSHA512, Username: name, Password: password, TLS: true, CAFile: k.CAFile}
}

// CA is a certificate authority made for a test.
type CA struct {
	// File is its certificate, PEM.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// NewCA makes a CA whose files live in the test's temporary folder.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca := &CA{dir: t.TempDir()}
	ca.key = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "eventsaga test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.File = writePEM(t, ca.dir, "ca.pem", "CERTIFICATE", der)
	return ca
}

// Issued is a certificate the CA signed, as files and as a pair.
type Issued struct {
	CertFile, KeyFile string
	Pair              tls.Certificate
}

// Issue signs a certificate for 127.0.0.1, ::1 and localhost: a server's,
// or with client true a client's.
func (ca *CA) Issue(t testing.TB, client bool) Issued {
	t.Helper()
	key := newKey(t)
	usage, name := x509.ExtKeyUsageServerAuth, "server"
	if client {
		usage, name = x509.ExtKeyUsageClientAuth, "client"
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := name + "-" + tmpl.SerialNumber.String()
	is := Issued{
		CertFile: writePEM(t, ca.dir, base+".pem", "CERTIFICATE", der),
		KeyFile:  writePEM(t, ca.dir, base+".key", "PRIVATE KEY", keyDER),
	}
	if is.Pair, err = tls.LoadX509KeyPair(is.CertFile, is.KeyFile); err != nil {
		t.Fatal(err)
	}
	return is
}

// Pool is a pool of the CA's certificate, for a server checking clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
