// Command kafkagrant sets a secured Kafka cluster up for the services, as
// its superuser: a SCRAM-SHA-512 user per service, the topics the services
// may not create themselves, and the ACLs of least privilege of package
// kafkaacl. make kafka-secure runs it once its broker is up.
//
//	kafkagrant -dir .kafka/secure
//
// The folder is make kafka-certs's: admin.env says how to reach the cluster
// as the admin; order.password, customer.password and projector.password
// are the services' passwords. Applying again changes nothing but the
// passwords. It retries until the broker answers, for at most -wait.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaacl"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
)

func main() {
	dir := flag.String("dir", ".kafka/secure", "make kafka-certs's folder")
	wait := flag.Duration("wait", 3*time.Minute, "how long the broker may take to answer")
	flag.Parse()
	if err := run(*dir, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "kafkagrant:", err)
		os.Exit(1)
	}
}

func run(dir string, wait time.Duration) error {
	env, err := kafkaconn.EnvFile(filepath.Join(dir, "admin.env"))
	if err != nil {
		return fmt.Errorf("%w (make kafka-certs writes it)", err)
	}
	admin, err := kafkaconn.Load(env)
	if err != nil {
		return fmt.Errorf("admin.env: %w", err)
	}
	conn, err := admin.Opts()
	if err != nil {
		return err
	}
	users := kafkaacl.Users{Order: "order", Customer: "customer", Projector: "projector"}
	passwords := map[string]string{}
	for _, u := range []string{users.Order, users.Customer, users.Projector} {
		pw, err := os.ReadFile(filepath.Join(dir, u+".password"))
		if err != nil {
			return err
		}
		passwords[u] = strings.TrimSpace(string(pw))
	}
	cl, err := kgo.NewClient(append(conn, kgo.SeedBrokers(strings.Split(env("KAFKA_BROKERS"), ",")...))...)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	n := kafkaacl.DefaultNames()
	grants := kafkaacl.Grants(n, users)
	for {
		err = kafkaacl.Apply(ctx, cl, n, passwords, grants)
		if err == nil || ctx.Err() != nil {
			break
		}
		// A broker that is starting refuses connections, or answers before
		// its authorizer has the metadata.
		fmt.Fprintf(os.Stderr, "kafkagrant: not yet (%v); trying again\n", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	if err != nil {
		return errors.Join(err, ctx.Err())
	}
	fmt.Printf("users %s, %s, %s (SCRAM-SHA-512); topics %s; ACLs:\n", users.Order, users.Customer, users.Projector, strings.Join(kafkaacl.Topics(n), ", "))
	for _, g := range grants {
		fmt.Println("  " + g.String())
	}
	return nil
}
