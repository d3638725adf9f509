// Command tracecheck checks, against a running stack that exports its
// traces to Jaeger (make jaeger, then make run), that one saga is one trace:
// it places an order with a traceparent of its own, waits for the order's
// decision, fetches that trace from Jaeger's query API and prints it span by
// span, as a tree. It exits non-zero unless the trace holds the saga's hops
// in all three services: the POST and its command and publication in the
// order service, the credit decision in the customer service, the order's
// decision back in the order service, and the projector's applications.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/eventsaga/eventsaga/internal/auth"
)

var (
	orderURL    = flag.String("order", "http://127.0.0.1:8080", "order service")
	customerURL = flag.String("customer", "http://127.0.0.1:8081", "customer service")
	jaegerURL   = flag.String("jaeger", "http://127.0.0.1:16686", "Jaeger's query service")
	timeout     = flag.Duration("timeout", time.Minute, "how long to wait for the decision, then for the trace")
)

func main() {
	flag.Parse()
	tok, err := auth.ToolToken(os.Getenv) // the services' AUTH_* settings, if any
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracecheck:", err)
		os.Exit(1)
	}
	client.Transport = auth.WithToken(client.Transport, tok)
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tracecheck:", err)
		os.Exit(1)
	}
}

// want are the spans the trace must hold: service and operation.
var want = [][2]string{
	{"order", "POST /orders"},
	{"order", "PlaceOrder"},
	{"order", "orders.events publish"},
	{"customer", "orders.events receive"},
	{"customer", "process OrderCreated"},
	{"customer", "customers.events publish"},
	{"order", "process CreditReserved"},
	{"projector", "process OrderCreated"},
	{"projector", "process CreditReserved"},
	{"projector", "process OrderApproved"},
}

func run() error {
	var c struct {
		CustomerID string `json:"customer_id"`
	}
	if err := post(*customerURL+"/customers", `{"name": "Trace Check", "credit_limit": "100.00"}`, "", &c); err != nil {
		return err
	}
	traceID, parent := randomHex(16), randomHex(8)
	var o struct {
		OrderID string `json:"order_id"`
	}
	body := `{"customer_id": "` + c.CustomerID + `", "items": [{"product_id": "sku-1", "quantity": 1, "unit_price": "30.00"}]}`
	if err := post(*orderURL+"/orders", body, "00-"+traceID+"-"+parent+"-01", &o); err != nil {
		return err
	}
	fmt.Printf("placed order %s with traceparent 00-%s-%s-01\n", o.OrderID, traceID, parent)
	status, err := awaitDecision(o.OrderID)
	if err != nil {
		return err
	}
	fmt.Printf("the order is %s; its trace: %s/api/traces/%s\n", status, *jaegerURL, traceID)

	var tr trace
	var missing []string
	deadline := time.Now().Add(*timeout)
	for {
		tr, err = fetchTrace(traceID)
		if err == nil {
			if missing = tr.missing(); len(missing) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("trace %s: %w", traceID, err)
			}
			fmt.Print(tr.tree())
			return fmt.Errorf("trace %s lacks %s after %v", traceID, strings.Join(missing, ", "), *timeout)
		}
		time.Sleep(time.Second) // the services export every few seconds
	}
	fmt.Print(tr.tree())
	fmt.Printf("trace %s: %d spans from %s; every hop of the saga is there\n", traceID, len(tr.Spans), strings.Join(tr.services(), ", "))
	return nil
}

func awaitDecision(orderID string) (string, error) {
	deadline := time.Now().Add(*timeout)
	for {
		var v struct {
			Status string `json:"status"`
		}
		err := get(*orderURL+"/orders/"+orderID, &v)
		if err == nil && v.Status != "PENDING" {
			return v.Status, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("order %s still %s after %v (%v)", orderID, v.Status, *timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// trace is a trace as Jaeger's query API (/api/traces/{id}) gives it.
type trace struct {
	Spans []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		StartTime int64  `json:"startTime"` // µs since the epoch
		Duration  int64  `json:"duration"`  // µs
		ProcessID string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func fetchTrace(traceID string) (trace, error) {
	var out struct {
		Data   []trace `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := get(*jaegerURL+"/api/traces/"+traceID, &out); err != nil {
		return trace{}, err
	}
	if len(out.Data) != 1 {
		return trace{}, fmt.Errorf("the query API returned %d traces (%v)", len(out.Data), out.Errors)
	}
	return out.Data[0], nil
}

func (t trace) service(i int) string { return t.Processes[t.Spans[i].ProcessID].ServiceName }

func (t trace) services() []string {
	var out []string
	for i := range t.Spans {
		if s := t.service(i); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func (t trace) missing() []string {
	var out []string
	for _, w := range want {
		found := false
		for i, s := range t.Spans {
			found = found || (t.service(i) == w[0] && s.OperationName == w[1])
		}
		if !found {
			out = append(out, fmt.Sprintf("%q of %s", w[1], w[0]))
		}
	}
	return out
}

// tree lists the spans depth first, each under its parent, with its start
// from the trace's first span and its duration.
func (t trace) tree() string {
	children := map[string][]int{}
	byID := map[string]bool{}
	first := int64(0)
	for _, s := range t.Spans {
		byID[s.SpanID] = true
		if first == 0 || s.StartTime < first {
			first = s.StartTime
		}
	}
	var roots []int
	for i, s := range t.Spans {
		parent := ""
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		if parent != "" && byID[parent] {
			children[parent] = append(children[parent], i)
		} else {
			roots = append(roots, i)
		}
	}
	byStart := func(a, b int) int { return int(t.Spans[a].StartTime - t.Spans[b].StartTime) }
	var b strings.Builder
	fmt.Fprintf(&b, "%9s %9s  %-10s %s\n", "start ms", "took ms", "service", "span")
	var walk func(i, depth int)
	walk = func(i, depth int) {
		s := t.Spans[i]
		fmt.Fprintf(&b, "%9.1f %9.2f  %-10s %s%s\n", float64(s.StartTime-first)/1000, float64(s.Duration)/1000,
			t.service(i), strings.Repeat("  ", depth), s.OperationName)
		kids := children[s.SpanID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	slices.SortFunc(roots, byStart)
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

var client = &http.Client{Timeout: 10 * time.Second}

func post(url, body, traceparent string, out any) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	return do(req, http.StatusCreated, out)
}

func get(url string, out any) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	return do(req, http.StatusOK, out)
}

func do(req *http.Request, want int, out any) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
