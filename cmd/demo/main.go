// Command demo shows the saga against a running system (make run): it
// registers a customer and places orders that end APPROVED, REJECTED for
// credit, REJECTED for an unknown customer, and CANCELLED with the credit
// given back, printing each step as it appears on the topics and what the
// services and the read model then say. It exits non-zero if any saga ends
// otherwise than it should.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/auth"
	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/internal/sagalog"
	"github.com/eventsaga/eventsaga/pkg/events"
)

var (
	orderURL     = flag.String("order", "http://127.0.0.1:8080", "order service")
	customerURL  = flag.String("customer", "http://127.0.0.1:8081", "customer service")
	projectorURL = flag.String("projector", "http://127.0.0.1:8082", "projector")
	brokers      = flag.String("brokers", envOr("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	// With the services' AUTH_HS256_SECRET (or AUTH_TOKEN) set, the demo
	// calls them as an admin.
	tok, err := auth.ToolToken(os.Getenv)
	if err != nil {
		return err
	}
	http.DefaultClient.Transport = auth.WithToken(http.DefaultClient.Transport, tok)
	// Watch from the topics' current end, so that only the demo's events show.
	// And with KAFKA_SASL_MECHANISM, KAFKA_TLS_CA (package kafkaconn) it
	// connects to a secured cluster.
	conn, err := kafkaconn.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(conn, kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics("orders.events", "customers.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	w := &watcher{cl: cl}
	if err := w.ready(ctx); err != nil {
		return err
	}

	fmt.Println("== A customer with a credit limit of 100.00")
	var c struct {
		CustomerID uuid.UUID `json:"customer_id"`
	}
	if err := post(*customerURL+"/customers", `{"name": "Ada Lovelace", "credit_limit": "100.00"}`, &c); err != nil {
		return err
	}
	fmt.Printf("registered %s\n", c.CustomerID)
	w.await(ctx, c.CustomerID, "CustomerRegistered")

	failed := 0
	scenario := func(title string, customer uuid.UUID, items, want string, after func(order uuid.UUID) (string, error)) {
		fmt.Printf("\n== %s\n", title)
		var o struct {
			OrderID uuid.UUID `json:"order_id"`
			Total   string    `json:"total"`
		}
		if err := post(*orderURL+"/orders", fmt.Sprintf(`{"customer_id": %q, "items": %s}`, customer, items), &o); err != nil {
			fmt.Println("FAILED:", err)
			failed++
			return
		}
		fmt.Printf("POST /orders -> %s, PENDING, total %s\n", o.OrderID, o.Total)
		w.version = 0
		got := w.await(ctx, o.OrderID, "")
		if after != nil && got == "APPROVED" {
			var err error
			if got, err = after(o.OrderID); err != nil {
				fmt.Println("FAILED:", err)
				failed++
				return
			}
		}
		var read map[string]any
		_ = get(fmt.Sprintf("%s/orders/%s?min_version=%d", *projectorURL, o.OrderID, w.version), &read)
		fmt.Printf("read model: status %v, version %v\n", read["status"], read["version"])
		if got != want {
			fmt.Printf("FAILED: the saga ended %s, want %s\n", got, want)
			failed++
			return
		}
		fmt.Printf("ok: %s\n", got)
	}
	apple := `[{"product_id": "apple", "quantity": 3, "unit_price": "10.00"}]`
	scenario("An order within the limit is approved", c.CustomerID, apple, "APPROVED", nil)
	scenario("An order beyond the credit left is rejected", c.CustomerID,
		`[{"product_id": "piano", "quantity": 1, "unit_price": "500.00"}]`, "REJECTED (INSUFFICIENT_CREDIT)", nil)
	scenario("An order for a customer nobody registered is rejected", uuid.New(), apple, "REJECTED (UNKNOWN_CUSTOMER)", nil)
	scenario("An approved order is cancelled and its credit comes back", c.CustomerID,
		`[{"product_id": "pear", "quantity": 2, "unit_price": "20.00"}]`, "CANCELLED", func(order uuid.UUID) (string, error) {
			fmt.Printf("credit before cancelling: %s\n", credit(c.CustomerID))
			if err := post(*orderURL+"/orders/"+order.String()+"/cancel", "", nil); err != nil {
				return "", err
			}
			fmt.Println("POST /orders/{id}/cancel")
			got := w.await(ctx, order, "CreditReleased") // the cancellation, then the release
			fmt.Printf("credit after: %s\n", credit(c.CustomerID))
			return got, nil
		})

	fmt.Printf("\n== The customer at the end: %s\n", credit(c.CustomerID))
	if failed > 0 {
		return fmt.Errorf("%d sagas did not end as they should", failed)
	}
	fmt.Println("all sagas ended as they should")
	return nil
}

// watcher prints the topics' events and waits for sagas' steps.
type watcher struct {
	cl      *kgo.Client
	pending []*kgo.Record
	// version is the highest order version seen, to ask the read model for.
	version int64
}

// ready polls once, so that the consumer has its start offsets before the
// demo writes anything.
func (w *watcher) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fs := w.cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil && ctx.Err() == nil {
		return err
	}
	w.pending = append(w.pending, fs.Records()...)
	return nil
}

// await prints the events of saga id as they come, until one of type
// until (or, if until is "", one that decides the saga) arrives, and
// returns the saga's outcome so far.
func (w *watcher) await(ctx context.Context, id uuid.UUID, until string) string {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	outcome := ""
	for ctx.Err() == nil {
		for len(w.pending) > 0 {
			r := w.pending[0]
			w.pending = w.pending[1:]
			env, err := events.ParseEnvelope(r.Value)
			if err != nil || env.CorrelationID != id {
				continue
			}
			fmt.Println("  " + sagalog.Line(r.Topic, env))
			if env.AggregateID == id && env.AggregateVersion > w.version {
				w.version = env.AggregateVersion
			}
			if o := sagalog.Outcome(env); o != "" {
				outcome = o
			}
			if env.EventType == until || until == "" && sagalog.Outcome(env) != "" {
				return outcome
			}
		}
		w.pending = append(w.pending, w.cl.PollFetches(ctx).Records()...)
	}
	fmt.Println("  (no more events within 15s)")
	return outcome
}

func credit(id uuid.UUID) string {
	var v map[string]any
	if err := get(*customerURL+"/customers/"+id.String(), &v); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("limit %v, reserved %v, available %v", v["credit_limit"], v["reserved"], v["available"])
}

func post(url, body string, out any) error {
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	return decode(resp, out)
}

func get(url string, out any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	return decode(resp, out)
}

func decode(resp *http.Response, out any) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
