package outbox

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/logctx"
	"github.com/eventsaga/eventsaga/internal/testenv"
	"github.com/eventsaga/eventsaga/pkg/events"
)

// withMsg returns the lines of buf logged with message msg.
func withMsg(t *testing.T, buf *testenv.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range buf.JSONLines(t) {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A handler that logs with the context it is given logs the event's
// trace_id (from its traceparent header) and correlation_id; so does the
// consumer when it gives an event up. An event without a traceparent has
// no trace_id.
func TestConsumerLogsCarryTheEventsTraceAndCorrelation(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	e := newEnv(t, 1)
	traced, failing, untraced := keyOf(1), keyOf(2), keyOf(3)
	tp := kgo.RecordHeader{Key: events.HeaderTraceParent, Value: []byte("00-" + traceID + "-00f067aa0ba902b7-01")}
	r1, r2, r3 := e.record(t, traced, 1), e.record(t, failing, 1), e.record(t, untraced, 1)
	r1.Headers = append(r1.Headers, tp)
	r2.Headers = append(r2.Headers, tp)
	e.produce(t, r1, r2, r3)

	var buf testenv.Buffer
	log := slog.New(logctx.NewHandler(slog.NewJSONHandler(&buf, nil)))
	c := e.startCountingConsumer(t, e.kafka.Topic("logctx-test"), func(cfg *ConsumerConfig) {
		cfg.Logger = log
		cfg.Handler = func(ctx context.Context, tx pgx.Tx, d Delivery) error {
			log.InfoContext(ctx, "applying", "key", string(d.Record.Key))
			if string(d.Record.Key) == failing.String() {
				return Permanent(errors.New("bad event"))
			}
			return recordEffect(ctx, tx, d)
		}
	})
	waitFor(t, 20*time.Second, "the events to be dealt with", func() bool {
		s := c.consumer.Stats()
		return s.Applied == 2 && s.DeadLettered == 1
	})

	want := map[string][2]string{ // key: trace_id, correlation_id
		traced.String():   {traceID, traced.String()},
		failing.String():  {traceID, failing.String()},
		untraced.String(): {"", untraced.String()},
	}
	seen := map[string]bool{}
	for _, l := range withMsg(t, &buf, "applying") {
		key, _ := l["key"].(string)
		w, ok := want[key]
		if !ok {
			t.Fatalf("line for an unknown key: %v", l)
		}
		seen[key] = true
		trace, _ := l["trace_id"].(string)
		if trace != w[0] || l["correlation_id"] != w[1] {
			t.Errorf("handler's line for %s: trace_id %q correlation_id %v; want %q and %s", key, trace, l["correlation_id"], w[0], w[1])
		}
	}
	if len(seen) != 3 {
		t.Errorf("handler logged for %d keys, want 3", len(seen))
	}
	dl := withMsg(t, &buf, "dead-lettering record")
	if len(dl) != 1 || dl[0]["trace_id"] != traceID || dl[0]["correlation_id"] != failing.String() {
		t.Errorf("dead-letter lines: %v; want one with trace_id %s and correlation_id %s", dl, traceID, failing)
	}
}
