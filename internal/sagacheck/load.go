// Package sagacheck drives a running system as its users do (REST in, the
// topics out) and afterwards checks the saga's promises from outside: every
// order terminal, one credit decision per order, each customer's reserved
// credit equal to its approved orders, the read model equal to the write
// model, no dead letters. The chaos checks (cmd/chaos) run it while they
// kill brokers and services.
package sagacheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/internal/auth"
)

// Endpoints is where the system answers. Several URLs of one service are
// instances of it: requests go round-robin, and to the next one when an
// instance does not answer.
type Endpoints struct {
	Order, Customer, Projector []string
	Brokers                    []string
}

// Load is the workload: customers, some of them short of credit, and a
// steady rate of orders spread over them, some of which are cancelled.
type Load struct {
	Customers int           // customers to register
	Short     int           // every Short-th customer gets a credit limit that refuses most orders (0: none)
	Rate      int           // orders per second
	Duration  time.Duration // how long orders are placed
	Cancel    int           // every Cancel-th order is cancelled a moment after it is placed (0: none)
}

// Order is an order the load placed.
type Order struct {
	ID       uuid.UUID
	Customer uuid.UUID
	Begun    time.Time // when its POST began (the first attempt)
	// Cancelled: a cancel was accepted (200). A 409 (already decided as
	// REJECTED) leaves it false.
	Cancelled bool
}

// Placed is what a load did.
type Placed struct {
	Customers []uuid.UUID
	Orders    []Order
	Failed    int           // orders given up after every instance failed
	Retried   int           // requests that needed more than one attempt
	Start     time.Time     // when the first order was placed
	Took      time.Duration // how long placing them took
}

// client sends requests to a service's instances with retries.
type client struct {
	http    *http.Client
	next    atomic.Uint64
	retried atomic.Int64
}

// newClient's requests carry an admin's token when the services run with
// AUTH_* settings (auth.ToolToken); a token that cannot be minted is none.
func newClient() *client {
	tok, _ := auth.ToolToken(os.Getenv)
	return &client{http: &http.Client{Timeout: 10 * time.Second,
		Transport: auth.WithToken(&http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}, tok)}}
}

// errStatus is an answer that is final: retrying it would not change it.
type errStatus struct {
	code int
	body string
}

func (e *errStatus) Error() string { return fmt.Sprintf("%d %s", e.code, e.body) }

// do sends one request to the instances in turn until one answers with a
// status that is not 5xx, for up to 60 s: a killed instance refuses, a
// stopped broker makes commands wait. POSTs carry an Idempotency-Key where
// the API takes one, so that a retry after a lost answer creates nothing
// twice. A 2xx answer is decoded into out; any other final answer is an
// *errStatus.
func (c *client) do(ctx context.Context, method string, urls []string, path, body, key string, out any) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for attempt := 0; ; attempt++ {
		if attempt == 1 {
			c.retried.Add(1)
		}
		base := urls[int(c.next.Add(1))%len(urls)]
		code, b, err := c.once(ctx, method, base+path, body, key)
		switch {
		case err == nil && code < 300:
			if out == nil {
				return nil
			}
			return json.Unmarshal(b, out)
		case err == nil && code < 500:
			return &errStatus{code, string(b)}
		case err == nil:
			last = &errStatus{code, string(b)}
		default:
			last = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, path, last)
		}
		time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
	}
}

func (c *client) once(ctx context.Context, method, url, body, key string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Register registers the load's customers: every Short-th one with a credit
// limit of 60.00, which an order of the load (1.01 to 250.00) often exceeds,
// the others with plenty.
func Register(ctx context.Context, ep Endpoints, l Load) ([]uuid.UUID, error) {
	c := newClient()
	custs := make([]uuid.UUID, l.Customers)
	errs := make([]error, l.Customers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range custs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			limit := "1000000.00"
			if l.Short > 0 && i%l.Short == 0 {
				limit = "60.00"
			}
			var out struct {
				CustomerID uuid.UUID `json:"customer_id"`
			}
			// Registration is not idempotent: no retry, a failure fails the run.
			code, b, err := c.once(ctx, "POST", ep.Customer[i%len(ep.Customer)]+"/customers",
				fmt.Sprintf(`{"name": "chaos-%d", "credit_limit": %q}`, i, limit), "")
			if err == nil && code != http.StatusCreated {
				err = &errStatus{code, string(b)}
			}
			if err == nil {
				err = json.Unmarshal(b, &out)
			}
			custs[i], errs[i] = out.CustomerID, err
		})
	}
	wg.Wait()
	return custs, errors.Join(errs...)
}

// Place places l.Rate orders per second for l.Duration across custs, from
// at most 256 requests in flight, and cancels every l.Cancel-th order
// between 0 and 300 ms after it was placed.
func Place(ctx context.Context, ep Endpoints, l Load, custs []uuid.UUID) *Placed {
	c := newClient()
	var (
		mu     sync.Mutex
		out    = &Placed{Customers: custs}
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	sem := make(chan struct{}, 256)
	one := func(i int) {
		cust := custs[i%len(custs)]
		body := fmt.Sprintf(`{"customer_id": %q, "items": [{"product_id": "sku-%d", "quantity": %d, "unit_price": "%d.%02d"}]}`,
			cust, i%100, 1+i%5, 1+i%50, 1+i%99)
		o := Order{Customer: cust, Begun: time.Now()}
		var created struct {
			OrderID uuid.UUID `json:"order_id"`
		}
		if err := c.do(ctx, "POST", ep.Order, "/orders", body, uuid.NewString(), &created); err != nil {
			if failed.Add(1) <= 3 {
				fmt.Printf("POST /orders failed for good: %v\n", err)
			}
			return
		}
		o.ID = created.OrderID
		if l.Cancel > 0 && i%l.Cancel == 0 {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			err := c.do(ctx, "POST", ep.Order, "/orders/"+o.ID.String()+"/cancel", "", "", nil)
			var st *errStatus
			switch {
			case err == nil:
				o.Cancelled = true
			case errors.As(err, &st) && st.code == http.StatusConflict:
				// Already rejected, or a retried cancel whose first attempt
				// went through: the order's final state says which.
			default:
				fmt.Printf("cancel %s: %v\n", o.ID, err)
			}
		}
		mu.Lock()
		out.Orders = append(out.Orders, o)
		mu.Unlock()
	}
	out.Start = time.Now()
	interval := time.Second / time.Duration(l.Rate)
	for i := 0; ; i++ {
		at := out.Start.Add(time.Duration(i) * interval)
		if !at.Before(out.Start.Add(l.Duration)) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(at))
		sem <- struct{}{}
		wg.Go(func() { defer func() { <-sem }(); one(i) })
	}
	wg.Wait()
	out.Took = time.Since(out.Start)
	out.Failed = int(failed.Load())
	out.Retried = int(c.retried.Load())
	return out
}
