package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/tracing"
)

// withTracing gives each service a tracer provider that exports its spans,
// as each ends, to exp, with the service's name as OTLP would carry it.
func withTracing(exp *tracetest.InMemoryExporter) option {
	return func(s *system) {
		s.tracing = func(group string) trace.TracerProvider {
			name := strings.TrimSuffix(group, "-service")
			res, err := tracing.Resource(context.Background(), name)
			if err != nil {
				s.t.Fatal(err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
			s.t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return tp
		}
	}
}

// One saga is one trace: the POST, its command, the relay's publication
// (joined through the traceparent stored with the outbox row), the
// customer service's receive and decision, its publication, the order
// service's decision, the customer's settlement and the projector's
// applications, each span the child of the one before. The transactions
// that apply a batch are traces of their own, linked to each record they
// apply, with the database's statements under them.
func TestOneSagaIsOneTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	s := startSystem(t, withTracing(exp))
	ida := s.register("Ida", "100.00")
	id := s.place(ida, 1, "30.00")
	s.awaitStatus(id, "APPROVED")

	var post tracetest.SpanStub
	var spans []tracetest.SpanStub
	deadline := time.Now().Add(20 * time.Second)
	for {
		post, spans = sagaTrace(exp.GetSpans())
		// The last hops: the customer's settlement reaches the projector.
		if countSpans(spans, "projector", "process CreditSettled") > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if post.Name == "" {
		t.Fatalf("no span POST /orders among %d spans", len(exp.GetSpans()))
	}
	tr := traceTree{t: t, spans: spans}
	if post.Parent.IsValid() {
		t.Errorf("POST /orders has parent %s; want it to start the trace", post.Parent.SpanID())
	}
	orders, customers := s.ordersTopic, s.customersTopic
	place := tr.child(post, "order", "PlaceOrder")
	tr.sql(place, "order")
	created := tr.child(place, "order", orders+" publish")
	decided := tr.child(tr.child(created, "customer", orders+" receive"), "customer", "process OrderCreated")
	reserved := tr.child(decided, "customer", customers+" publish")
	approval := tr.child(tr.child(reserved, "order", customers+" receive"), "order", "process CreditReserved")
	approved := tr.child(approval, "order", orders+" publish")
	settle := tr.child(tr.child(approved, "customer", orders+" receive"), "customer", "process OrderApproved")
	settled := tr.child(settle, "customer", customers+" publish")
	for _, p := range []struct {
		publish tracetest.SpanStub
		topic   string
		event   string
	}{{created, orders, "OrderCreated"}, {reserved, customers, "CreditReserved"}, {approved, orders, "OrderApproved"}, {settled, customers, "CreditSettled"}} {
		tr.child(tr.child(p.publish, "projector", p.topic+" receive"), "projector", "process "+p.event)
	}

	// A decision's transaction: its own trace, linked to the record.
	all := exp.GetSpans()
	batch := linkedBatch(t, all, decided)
	if batch.SpanContext.TraceID() == post.SpanContext.TraceID() {
		t.Errorf("the batch span is in the saga's trace; want a trace of its own")
	}
	receive := tr.byID(decided.Parent.SpanID())
	if !linksTo(batch, receive.SpanContext) {
		t.Errorf("the batch span links to %v; want the record's receive span %s among them", batch.Links, receive.SpanContext.SpanID())
	}
	(&traceTree{t: t, spans: inTrace(all, batch.SpanContext.TraceID())}).sql(batch, "customer")
	if t.Failed() {
		t.Log(listSpans(spans))
	}
}

// sagaTrace returns the one span named POST /orders and the spans of its
// trace.
func sagaTrace(all tracetest.SpanStubs) (tracetest.SpanStub, []tracetest.SpanStub) {
	for _, s := range all {
		if s.Name == "POST /orders" {
			return s, inTrace(all, s.SpanContext.TraceID())
		}
	}
	return tracetest.SpanStub{}, nil
}

func inTrace(all tracetest.SpanStubs, id trace.TraceID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range all {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

func serviceOf(s tracetest.SpanStub) string {
	for _, kv := range s.Resource.Attributes() {
		if kv.Key == "service.name" {
			return kv.Value.AsString()
		}
	}
	return ""
}

func countSpans(spans []tracetest.SpanStub, service, name string) int {
	n := 0
	for _, s := range spans {
		if s.Name == name && serviceOf(s) == service {
			n++
		}
	}
	return n
}

// traceTree finds spans of one trace by their parent.
type traceTree struct {
	t     *testing.T
	spans []tracetest.SpanStub
}

// child returns the one span of service named name whose parent is
// parent; it fails the test when there is none or more than one.
func (tr *traceTree) child(parent tracetest.SpanStub, service, name string) tracetest.SpanStub {
	tr.t.Helper()
	var found []tracetest.SpanStub
	for _, s := range tr.spans {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() && s.Name == name && serviceOf(s) == service {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		tr.t.Fatalf("%d spans %q of %s under %q (%s); want 1. The trace:\n%s", len(found), name, service, parent.Name, serviceOf(parent), listSpans(tr.spans))
	}
	return found[0]
}

// sql checks that parent has a database statement's span of service under
// it (otelpgx's).
func (tr *traceTree) sql(parent tracetest.SpanStub, service string) {
	tr.t.Helper()
	for _, s := range tr.spans {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() && serviceOf(s) == service &&
			strings.Contains(s.InstrumentationScope.Name, "otelpgx") {
			return
		}
	}
	tr.t.Errorf("no database statement's span under %q of %s. Its trace:\n%s", parent.Name, service, listSpans(tr.spans))
}

func (tr *traceTree) byID(id trace.SpanID) tracetest.SpanStub {
	tr.t.Helper()
	for _, s := range tr.spans {
		if s.SpanContext.SpanID() == id {
			return s
		}
	}
	tr.t.Fatalf("no span %s in the trace", id)
	return tracetest.SpanStub{}
}

// linkedBatch returns the "process batch" span that span links to.
func linkedBatch(t *testing.T, all tracetest.SpanStubs, span tracetest.SpanStub) tracetest.SpanStub {
	t.Helper()
	for _, l := range span.Links {
		for _, s := range all {
			if s.SpanContext.SpanID() == l.SpanContext.SpanID() && s.Name == "process batch" {
				return s
			}
		}
	}
	t.Fatalf("%q of %s links to no process batch span (links %v)", span.Name, serviceOf(span), span.Links)
	return tracetest.SpanStub{}
}

func linksTo(s tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, l := range s.Links {
		if l.SpanContext.SpanID() == sc.SpanID() && l.SpanContext.TraceID() == sc.TraceID() {
			return true
		}
	}
	return false
}

// listSpans lists spans one a line: service, name, own and parent IDs.
func listSpans(spans []tracetest.SpanStub) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %-9s %-40q span %s parent %s links %d (%s)\n", serviceOf(s), s.Name, s.SpanContext.SpanID(), s.Parent.SpanID(), len(s.Links), s.EndTime.Sub(s.StartTime))
	}
	return b.String()
}
