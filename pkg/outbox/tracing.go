package outbox

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsaga/eventsaga/internal/tracing"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// Tracing, when a TracerProvider is configured: one saga is one trace,
// joined hop by hop through the traceparent each record carries.
//
//   - The relay starts each record's "<topic> publish" span (kotel's, ending
//     when Kafka acknowledges it) as a child of the traceparent stored with
//     its outbox row, the span of the command or decision that wrote it, and
//     puts the publish span's traceparent on the record.
//   - The consumer's client makes a "<topic> receive" span per record
//     (kotel's), child of the publish span.
//   - A transaction applies a batch that may hold many sagas' records: it
//     has a span of its own, "process batch", in a trace of its own, linked
//     to every record it applies; the database's spans go under it. Each
//     record applied gets a "process <EventType>" span, child of its receive
//     span (so in its saga's trace) and linked to the batch span; the
//     events a handler's decision appends carry that span's traceparent
//     (Delivery.TraceParent), on to the next service.
//
// Without a provider none of this runs, and Delivery.TraceParent is the
// record's own header: a caller's trace ID still travels with the saga.

// kafkaTracing returns the kotel hooks of a client, none for a nil tp.
func kafkaTracing(tp trace.TracerProvider, group string) []kgo.Opt {
	if tp == nil {
		return nil
	}
	opts := []kotel.TracerOpt{kotel.TracerProvider(tp), kotel.TracerPropagator(tracing.Propagator)}
	if group != "" {
		opts = append(opts, kotel.ConsumerGroup(group))
	}
	return []kgo.Opt{kgo.WithHooks(kotel.NewKotel(kotel.WithTracer(kotel.NewTracer(opts...))).Hooks()...)}
}

// publishContext is the context to produce rec in: its outbox row's
// traceparent as the parent of its publish span.
func publishContext(ctx context.Context, rec *kgo.Record) context.Context {
	return tracing.Context(ctx, header(rec, events.HeaderTraceParent))
}

// startBatchSpan starts the span of a transaction applying recs.
func (c *Consumer) startBatchSpan(ctx context.Context, recs []*kgo.Record) (context.Context, trace.Span) {
	links := make([]trace.Link, 0, len(recs))
	var topics []string
	for _, r := range recs {
		if sc := recordSpanContext(r); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
		if !slices.Contains(topics, r.Topic) {
			topics = append(topics, r.Topic)
		}
	}
	return c.tracer.Start(ctx, "process batch",
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(strings.Join(topics, ",")),
			semconv.MessagingConsumerGroupName(c.cfg.Group),
			semconv.MessagingBatchMessageCount(len(recs)),
		))
}

// startRecordSpan starts the span of applying d within the transaction of
// batch (whose context is txCtx): a child of the record's receive span.
func (c *Consumer) startRecordSpan(txCtx context.Context, batch trace.Span, d Delivery) (context.Context, trace.Span) {
	rec := d.Record
	parent := trace.ContextWithSpanContext(txCtx, recordSpanContext(rec))
	return c.tracer.Start(parent, "process "+d.Envelope.EventType,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: batch.SpanContext()}),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(rec.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(int(rec.Partition))),
			semconv.MessagingKafkaOffset(int(rec.Offset)),
			semconv.MessagingConsumerGroupName(c.cfg.Group),
			semconv.MessagingMessageID(d.Envelope.EventID.String()),
			attribute.String("eventsaga.event_type", d.Envelope.EventType),
			tracing.CorrelationID(d.Envelope.CorrelationID),
		))
}

// recordSpanContext is the span a consumed record continues: its receive
// span (kotel's, in rec.Context), else the traceparent it carries.
func recordSpanContext(rec *kgo.Record) trace.SpanContext {
	if rec.Context != nil {
		if sc := trace.SpanContextFromContext(rec.Context); sc.IsValid() {
			return sc
		}
	}
	return tracing.SpanContext(header(rec, events.HeaderTraceParent))
}
