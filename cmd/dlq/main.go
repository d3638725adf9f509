// Command dlq shows the dead letters of a consumer group and replays them,
// so that the group's consumer applies them once what made them fail is
// fixed.
//
//	dlq list   -group customer-service            # each dead letter: why, whence, the event
//	dlq list   -group customer-service -json      # the same, one JSON object a line
//	dlq replay -group customer-service -offsets 3:0,3:7
//	dlq replay -group customer-service -all
//
// Offsets are the dead letters' own, <partition>:<offset> on the dead-letter
// topic, as list prints them. A replayed dead letter goes back to the
// partition it came from, marked for its group, whose consumer applies it
// unless the group has applied its event since: replaying twice applies it
// once. It is applied on the state of now, after the events that followed
// it: docs/operations.md says what to check first.
//
// Brokers: -brokers, else KAFKA_BROKERS, else 127.0.0.1:9092; a secured
// cluster's TLS and SASL settings as the services take them (KAFKA_TLS_CA,
// KAFKA_SASL_MECHANISM, KAFKA_USERNAME, KAFKA_PASSWORD: docs/operations.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsaga/eventsaga/internal/kafkaconn"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var u usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &u):
		if u.msg != "" {
			fmt.Fprintln(os.Stderr, "dlq:", err)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "dlq:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  dlq list   (-group G | -topic T) [-json]
  dlq replay (-group G | -topic T) (-offsets P:O[,P:O...] | -all)

The dead-letter topic of group G is dlq.G. Run "dlq list -h" or
"dlq replay -h" for the flags.`

// usageError is a command line that does not say what to do.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usagef("no command: give list or replay")
	}
	cmd := args[0]
	if cmd == "-h" || cmd == "-help" || cmd == "--help" || cmd == "help" {
		fmt.Fprintln(stdout, usage)
		return nil
	}
	if cmd != "list" && cmd != "replay" {
		fmt.Fprintln(stderr, usage)
		return usagef("unknown command %q: give list or replay", cmd)
	}

	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", env("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated")
	group := fs.String("group", "", "the consumer group whose dead letters these are (topic dlq.<group>)")
	topic := fs.String("topic", "", "the dead-letter topic, if not dlq.<group>")
	timeout := fs.Duration("timeout", 30*time.Second, "how long Kafka has to answer")
	var asJSON, all *bool
	var offsets *string
	if cmd == "list" {
		asJSON = fs.Bool("json", false, "one JSON object a line")
	} else {
		offsets = fs.String("offsets", "", "the dead letters to replay: <partition>:<offset> on the dead-letter topic, comma-separated, as list shows them")
		all = fs.Bool("all", false, "replay every dead letter of the topic")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{} // the flag package has said what is wrong
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case *group == "" && *topic == "":
		return usagef("give -group (or -topic)")
	case cmd == "replay" && (*offsets == "") == !*all:
		return usagef("replay: give either -offsets or -all")
	}
	var chosen []position
	if cmd == "replay" && *offsets != "" {
		var err error
		if chosen, err = parsePositions(*offsets); err != nil {
			return err
		}
	}
	if *topic == "" {
		*topic = "dlq." + *group
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	seeds := strings.Split(*brokers, ",")
	conn, err := kafkaconn.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	letters, err := outbox.ReadDeadLetters(ctx, seeds, *topic, conn...)
	if errors.Is(err, outbox.ErrNoTopic) {
		return err // it names the topic, and those there are
	}
	if err != nil {
		return fmt.Errorf("read %s from %s: %w", *topic, *brokers, err)
	}
	for i := range letters {
		if letters[i].Group == "" {
			letters[i].Group = *group // a dead letter from before dlq_group
		}
	}
	if cmd == "list" {
		return list(stdout, *topic, letters, *asJSON)
	}
	if *all {
		return replay(ctx, stdout, seeds, conn, *topic, letters, true)
	}
	picked, err := pick(letters, chosen, *topic)
	if err != nil {
		return err
	}
	return replay(ctx, stdout, seeds, conn, *topic, picked, false)
}

// position is a record's place on the dead-letter topic.
type position struct {
	partition int32
	offset    int64
}

func (p position) String() string { return fmt.Sprintf("%d:%d", p.partition, p.offset) }

// parsePositions reads "3:17,3:18".
func parsePositions(s string) ([]position, error) {
	var out []position
	for _, f := range strings.Split(s, ",") {
		ps, offs, ok := strings.Cut(strings.TrimSpace(f), ":")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(offs, 10, 64)
		if !ok || err1 != nil || err2 != nil || p < 0 || o < 0 {
			return nil, usagef("malformed -offsets entry %q: want <partition>:<offset> of the dead-letter topic, e.g. 3:17, as dlq list prints them", f)
		}
		if pos := (position{int32(p), o}); !slices.Contains(out, pos) {
			out = append(out, pos)
		}
	}
	return out, nil
}

// pick returns the letters at the chosen positions, in the order chosen.
func pick(letters []outbox.DeadLetter, chosen []position, topic string) ([]outbox.DeadLetter, error) {
	at := make(map[position]outbox.DeadLetter, len(letters))
	for _, l := range letters {
		at[position{l.Record.Partition, l.Record.Offset}] = l
	}
	var out []outbox.DeadLetter
	var missing []string
	for _, p := range chosen {
		l, ok := at[p]
		if !ok {
			missing = append(missing, p.String())
			continue
		}
		out = append(out, l)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no dead letter at %s on %s (%d there; dlq list shows them): nothing replayed",
			strings.Join(missing, ", "), topic, len(letters))
	}
	return out, nil
}

// replay replays letters and says where each went. With skip, letters that
// cannot be replayed are left out, each with the reason; otherwise one of
// them stops the replay before anything is produced.
func replay(ctx context.Context, w io.Writer, brokers []string, conn []kgo.Opt, topic string, letters []outbox.DeadLetter, skip bool) error {
	if skip {
		var ok []outbox.DeadLetter
		for _, l := range letters {
			if err := l.Replayable(); err != nil {
				fmt.Fprintf(w, "skipped  %s: %v\n", place(l), err)
				continue
			}
			ok = append(ok, l)
		}
		letters = ok
	}
	if len(letters) == 0 {
		fmt.Fprintf(w, "nothing to replay on %s\n", topic)
		return nil
	}
	to, err := outbox.ReplayDeadLetters(ctx, brokers, letters, conn...)
	n := 0
	for i, l := range letters {
		if i < len(to) && to[i].Topic != "" {
			n++
			fmt.Fprintf(w, "replayed %s (%s %s) to %s for group %s\n", place(l), l.Envelope.EventType, l.Envelope.EventID, to[i], l.Group)
		}
	}
	if err != nil {
		return fmt.Errorf("%d of %d replayed: %w", n, len(letters), err)
	}
	fmt.Fprintf(w, "%d replayed. The group's consumer applies each event it has not applied since, "+
		"and logs \"replayed dead letter applied\" or \"... skipped\".\n", n)
	return nil
}

func place(l outbox.DeadLetter) string {
	return fmt.Sprintf("%s/%d@%d", l.Record.Topic, l.Record.Partition, l.Record.Offset)
}

// list prints the letters for people, or as JSON lines.
func list(w io.Writer, topic string, letters []outbox.DeadLetter, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, l := range letters {
			if err := enc.Encode(jsonLetter(l)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, l := range letters {
		printLetter(w, l)
	}
	switch len(letters) {
	case 0:
		fmt.Fprintf(w, "no dead letters on %s\n", topic)
	case 1:
		fmt.Fprintf(w, "1 dead letter on %s\n", topic)
	default:
		fmt.Fprintf(w, "%d dead letters on %s\n", len(letters), topic)
	}
	return nil
}

func printLetter(w io.Writer, l outbox.DeadLetter) {
	r := l.Record
	fmt.Fprintf(w, "%d:%d  %s  %s  group %s\n", r.Partition, r.Offset, place(l), r.Timestamp.UTC().Format(time.RFC3339Nano), orNone(l.Group))
	fmt.Fprintf(w, "  error    %s\n", orNone(l.Error))
	source := "(unknown)"
	if l.Source.Topic != "" {
		source = l.Source.String()
	}
	fmt.Fprintf(w, "  source   %s\n", source)
	if l.EnvelopeErr != nil {
		fmt.Fprintf(w, "  value    not an event envelope: %v\n", l.EnvelopeErr)
		fmt.Fprintf(w, "           %q\n", cut(r.Value, 400))
	} else {
		e := l.Envelope
		fmt.Fprintf(w, "  event    %s v%d  event_id %s\n", e.EventType, e.SchemaVersion, e.EventID)
		fmt.Fprintf(w, "           %s %s version %d, occurred %s\n", e.AggregateType, e.AggregateID, e.AggregateVersion, e.OccurredAt.UTC().Format(time.RFC3339Nano))
		fmt.Fprintf(w, "           correlation %s, causation %s\n", e.CorrelationID, e.CausationID)
		fmt.Fprintf(w, "  data     %s\n", e.Data)
	}
	var hs []string
	for _, h := range r.Headers {
		switch h.Key {
		case outbox.HeaderError, outbox.HeaderDLQSource, outbox.HeaderDLQGroup: // shown above
		default:
			hs = append(hs, fmt.Sprintf("%s=%s", h.Key, h.Value))
		}
	}
	if len(hs) > 0 {
		fmt.Fprintf(w, "  headers  %s\n", strings.Join(hs, " "))
	}
	fmt.Fprintln(w)
}

// letterJSON is a dead letter as list -json prints it.
type letterJSON struct {
	DLQ     outbox.Location   `json:"dlq"`
	Time    time.Time         `json:"time"`
	Group   string            `json:"group"`
	Error   string            `json:"error"`
	Source  *outbox.Location  `json:"source"`
	Key     string            `json:"key"`
	Headers map[string]string `json:"headers"`
	// Event is the value when it is an envelope; else Value and ValueError.
	Event      json.RawMessage `json:"event,omitempty"`
	Value      string          `json:"value,omitempty"`
	ValueError string          `json:"value_error,omitempty"`
}

func jsonLetter(l outbox.DeadLetter) letterJSON {
	r := l.Record
	j := letterJSON{
		DLQ:  outbox.Location{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
		Time: r.Timestamp.UTC(), Group: l.Group, Error: l.Error, Key: string(r.Key), Headers: map[string]string{},
	}
	if l.Source.Topic != "" {
		j.Source = &l.Source
	}
	for _, h := range r.Headers {
		j.Headers[h.Key] = string(h.Value)
	}
	if l.EnvelopeErr == nil {
		j.Event = r.Value
	} else {
		j.Value, j.ValueError = string(r.Value), l.EnvelopeErr.Error()
	}
	return j
}

func cut(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
