package outbox

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// A transaction that applies the records of three sagas is one span in a
// trace of its own, linked to each record; each record's application is a
// span in its saga's trace, and what the handler carries on
// (Delivery.TraceParent) is that span.
func TestBatchOfManySagasLinksToEachSaga(t *testing.T) {
	e := newEnv(t, 1)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	sagas := map[trace.TraceID]string{} // the trace of each record, and its event ID
	var recs []*kgo.Record
	for i := range 3 {
		rec := e.record(t, keyOf(i), 1)
		parent := sdktrace.NewTracerProvider() // the producing service's
		ctx, span := parent.Tracer("test").Start(context.Background(), "command")
		span.End()
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: events.HeaderTraceParent, Value: []byte(tracing.TraceParent(ctx))})
		env, err := events.ParseEnvelope(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		sagas[span.SpanContext().TraceID()] = env.EventID.String()
		recs = append(recs, rec)
	}
	e.produce(t, recs...) // one produce, one fetch: one poll, one transaction

	var mu sync.Mutex
	carried := map[string]string{} // event ID → Delivery.TraceParent
	c := e.startCountingConsumer(t, e.kafka.Topic("traced"), func(cfg *ConsumerConfig) {
		cfg.Handler, cfg.TracerProvider = nil, tp
		cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, ds []Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range ds {
				carried[d.Envelope.EventID.String()] = d.TraceParent()
			}
			return nil
		}
	})
	waitFor(t, 20*time.Second, "three records applied", func() bool { return c.consumer.Stats().Applied == 3 })
	c.stop()

	spans := exp.GetSpans()
	var batches []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "process batch" {
			batches = append(batches, s)
		}
	}
	if len(batches) != 1 {
		t.Fatalf("%d batch spans; want the one transaction's", len(batches))
	}
	batch := batches[0]
	if _, ok := sagas[batch.SpanContext.TraceID()]; ok || batch.Parent.IsValid() {
		t.Errorf("the batch span is in a saga's trace (parent %v); want a trace of its own", batch.Parent)
	}
	linked := map[trace.TraceID]bool{}
	for _, l := range batch.Links {
		linked[l.SpanContext.TraceID()] = true
	}
	for id, eventID := range sagas {
		if !linked[id] {
			t.Errorf("the batch span links to no span of trace %s (links %v)", id, batch.Links)
		}
		var process []tracetest.SpanStub
		for _, s := range spans {
			if s.Name == "process ThingHappened" && s.SpanContext.TraceID() == id {
				process = append(process, s)
			}
		}
		if len(process) != 1 {
			t.Errorf("trace %s has %d process spans; want 1", id, len(process))
			continue
		}
		p := process[0]
		if len(p.Links) != 1 || p.Links[0].SpanContext.SpanID() != batch.SpanContext.SpanID() {
			t.Errorf("the process span of trace %s links to %v; want the batch span", id, p.Links)
		}
		if got, want := carried[eventID], "00-"+id.String()+"-"+p.SpanContext.SpanID().String()+"-01"; got != want {
			t.Errorf("the handler carries on %q for event %s; want the process span's %q", got, eventID, want)
		}
	}
}
