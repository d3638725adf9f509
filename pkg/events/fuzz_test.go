package events_test

// Fuzz targets of what the services parse from outside: envelopes off Kafka,
// their data through the registry, and amounts. An external test package,
// because the event types (orders, customers) import events.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

var (
	orderID    = uuid.MustParse("0190f5a0-0000-7000-8000-000000000001")
	customerID = uuid.MustParse("0190f5a0-0000-7000-8000-0000000000c1")
)

// samples holds an event of each type the services exchange, to seed the
// targets; the checks ask the registry itself what it knows.
var samples = []events.Event{
	orders.OrderCreated{OrderID: orderID, CustomerID: customerID, Items: []orders.Item{{ProductID: "apple", Quantity: 3, UnitPrice: 250}}, Total: 750},
	orders.OrderApproved{OrderID: orderID, CustomerID: customerID, Total: 750},
	orders.OrderRejected{OrderID: orderID, CustomerID: customerID, Reason: orders.ReasonInsufficientCredit},
	orders.OrderCancelled{OrderID: orderID, CustomerID: customerID, Total: 750, PreviousStatus: orders.StatusApproved},
	customers.CustomerRegistered{CustomerID: customerID, Name: "Ada", CreditLimit: 100000},
	customers.CreditLimitChanged{CustomerID: customerID, CreditLimit: 5000},
	customers.CreditReserved{CustomerID: customerID, OrderID: orderID, Amount: 750},
	customers.CreditReservationFailed{CustomerID: customerID, OrderID: orderID, Amount: 750, Reason: customers.ReasonUnknownCustomer},
	customers.CreditSettled{CustomerID: customerID, OrderID: orderID, Amount: 750},
	customers.CreditReleased{CustomerID: customerID, OrderID: orderID, Amount: 750},
}

// fuzzRegistry is the registry the services decode with: the order and
// customer events at their current versions.
func fuzzRegistry(tb testing.TB) *events.Registry {
	r := events.NewRegistry()
	if err := errors.Join(orders.Register(r), customers.Register(r)); err != nil {
		tb.Fatal(err)
	}
	return r
}

// sampleOf returns the sample of eventType, or nil for a type not registered.
func sampleOf(eventType string) events.Event {
	for _, e := range samples {
		if e.EventType() == eventType {
			return e
		}
	}
	return nil
}

// envelopeOf wraps e as the order service or customer service would.
func envelopeOf(tb testing.TB, r *events.Registry, e events.Event) events.Envelope {
	typ, v, data, err := r.Encode(e)
	if err != nil {
		tb.Fatal(err)
	}
	return events.Envelope{
		EventID: uuid.MustParse("0190f5a0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"), EventType: typ, SchemaVersion: v,
		AggregateType: "order", AggregateID: orderID, AggregateVersion: 1,
		OccurredAt:    time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC),
		CorrelationID: orderID, CausationID: uuid.MustParse("0190f5a0-1c2d-7e3f-8a4b-000000000000"),
		Data: data,
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzParseEnvelope checks that ParseEnvelope either refuses a record value
// with an error wrapping ErrMalformed, or returns an envelope that has every
// field the contract requires (IDs, type, versions >= 1, a time, an object
// as data), that renders to JSON which parses back to the same envelope
// (occurred_at at the contract's microseconds, in UTC), and whose data the
// registry decodes as checkDecode requires.
func FuzzParseEnvelope(f *testing.F) {
	r := fuzzRegistry(f)
	for _, e := range samples {
		f.Add(mustJSON(f, envelopeOf(f, r, e)))
	}
	valid := string(mustJSON(f, envelopeOf(f, r, samples[0])))
	// with is valid with field's value replaced by the JSON text value (which
	// need not be valid), or without field when value is "".
	with := func(field, value string) []byte {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(valid), &m); err != nil {
			f.Fatal(err)
		}
		var b strings.Builder
		for _, k := range []string{"event_id", "event_type", "schema_version", "aggregate_type", "aggregate_id",
			"aggregate_version", "occurred_at", "correlation_id", "causation_id", "data"} {
			v := string(m[k])
			if k == field {
				if v = value; v == "" {
					continue
				}
			}
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + k + `":` + v)
		}
		return []byte("{" + b.String() + "}")
	}
	for _, s := range []string{
		"", " ", "null", "{}", "[]", `"envelope"`, "1", "true", "{", valid[:len(valid)/2], valid + "{}", " \n" + valid + "\t",
		strings.Replace(valid, `"event_id"`, `"EVENT_ID"`, 1), // keys match case-insensitively
		strings.Replace(valid, `{"event_id"`, `{"unknown":[1,{"a":null}],"event_id"`, 1),
		strings.Replace(valid, `{"event_id"`, `{"event_type":"OrderApproved","event_id"`, 1), // duplicate key: the last wins
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		`{"data":` + strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001) + "}",
	} {
		f.Add([]byte(s))
	}
	for _, c := range []struct{ field, value string }{
		{"event_id", ""}, {"event_id", `"00000000-0000-0000-0000-000000000000"`}, {"event_id", `"not-a-uuid"`}, {"event_id", "7"},
		{"event_id", `"{0190f5a0-1c2d-7e3f-8a4b-5c6d7e8f9a0b}"`}, {"event_id", `"urn:uuid:0190f5a0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"`},
		{"event_type", ""}, {"event_type", `""`}, {"event_type", `"NoSuchEvent"`}, {"event_type", `"OrderCreated\u0000"`}, {"event_type", `"ÖrderCreated"`}, {"event_type", "null"},
		{"schema_version", "0"}, {"schema_version", "-1"}, {"schema_version", "2"}, {"schema_version", "1.0"}, {"schema_version", "1e400"},
		{"schema_version", `"1"`}, {"schema_version", "9223372036854775808"}, {"schema_version", "NaN"},
		{"aggregate_id", ""}, {"aggregate_id", "null"},
		{"aggregate_version", "0"}, {"aggregate_version", "9223372036854775807"}, {"aggregate_version", "9223372036854775808"}, {"aggregate_version", "-9223372036854775808"},
		{"occurred_at", ""}, {"occurred_at", `""`}, {"occurred_at", `"yesterday"`}, {"occurred_at", `"2026-11-23T10:00:00Z"`},
		{"occurred_at", `"2026-11-23T10:00:00.123456789+05:30"`}, {"occurred_at", `"2026-11-23 10:00:00Z"`}, {"occurred_at", `"0001-01-01T00:00:00Z"`},
		{"occurred_at", `"0001-01-01T00:00:00.000001Z"`}, {"occurred_at", `"0001-01-01T00:00:00.000000999Z"`}, {"occurred_at", `"0000-01-01T00:00:00+01:00"`}, {"occurred_at", `"9999-12-31T23:59:59.999999-01:00"`},
		{"occurred_at", `"2026-02-30T10:00:00Z"`}, {"occurred_at", `"2026-11-23T24:00:00Z"`}, {"occurred_at", "1795000000"},
		{"data", ""}, {"data", "null"}, {"data", "[]"}, {"data", `"{}"`}, {"data", "{}"}, {"data", `{"total":"1e3"}`},
		{"data", `{"order_id":"0190f5a0-0000-7000-8000-000000000001","total":"-0.01","items":null}`},
		{"data", `{"total":12.5}`}, {"data", `{"total":"999999999999999.99"}`}, {"data", `{"total":"1000000000000000.00"}`},
		{"data", `{"items":[{"product_id":"りんご","quantity":1,"unit_price":"0.10"},{"quantity":-1,"unit_price":"-0.00"}]}`},
		{"data", `{"items":[{"quantity":1.5}]}`}, {"data", `{"items":{"product_id":"a"}}`}, {"data", `{"total":"1","total":"2"}`},
	} {
		f.Add(with(c.field, c.value))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := events.CommonAgrees(b); err != nil {
			t.Fatalf("the common form's reader and encoding/json disagree on %q: %v", b, err)
		}
		env, err := events.ParseEnvelope(b)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("ParseEnvelope(%q): error %v does not wrap ErrMalformed", b, err)
			}
			if !reflect.DeepEqual(env, events.Envelope{}) {
				t.Fatalf("ParseEnvelope(%q) refused with %v but returned %+v", b, err, env)
			}
			return
		}
		switch {
		case env.EventID == uuid.Nil, env.EventType == "", env.SchemaVersion < 1, env.AggregateID == uuid.Nil,
			env.AggregateVersion < 1, env.OccurredAt.IsZero():
			t.Fatalf("ParseEnvelope(%q) accepted an envelope that lacks a required field: %+v", b, env)
		}
		if d := bytes.TrimSpace(env.Data); !json.Valid(d) || d[0] != '{' {
			t.Fatalf("ParseEnvelope(%q) accepted data that is not a JSON object: %s", b, env.Data)
		}

		out, err := json.Marshal(env)
		if err != nil {
			t.Fatalf("ParseEnvelope(%q) accepted an envelope that does not render: %v", b, err)
		}
		again, err := events.ParseEnvelope(out)
		if err != nil {
			t.Fatalf("ParseEnvelope(%q) accepted an envelope whose rendering %s it refuses: %v", b, out, err)
		}
		want := env
		want.OccurredAt = env.OccurredAt.UTC().Truncate(time.Microsecond)
		if !again.OccurredAt.Equal(want.OccurredAt) {
			t.Fatalf("occurred_at %v rendered and parsed again is %v, want %v", env.OccurredAt, again.OccurredAt, want.OccurredAt)
		}
		want.OccurredAt, want.Data = again.OccurredAt, again.Data
		if !reflect.DeepEqual(again, want) || !sameJSON(again.Data, env.Data) {
			t.Fatalf("envelope %+v rendered as %s parses back as %+v", env, out, again)
		}
		if out2 := mustJSON(t, again); !bytes.Equal(out2, out) {
			t.Fatalf("rendering is not stable:\n%s\n%s", out, out2)
		}
		checkDecode(t, r, env)
	})
}

// TestEnvelopesTakeTheCommonForm: what MarshalJSON writes is read by the
// one-pass reader, not handed to encoding/json; with white space around
// its tokens and its keys in another order too.
func TestEnvelopesTakeTheCommonForm(t *testing.T) {
	r := fuzzRegistry(t)
	for _, e := range samples {
		b := mustJSON(t, envelopeOf(t, r, e))
		var indented bytes.Buffer
		if err := json.Indent(&indented, b, " ", "\t"); err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		reordered := mustJSON(t, m) // encoding/json writes a map's keys sorted
		for _, in := range [][]byte{b, indented.Bytes(), reordered} {
			took, err := events.CommonAgrees(in)
			if !took || err != nil {
				t.Errorf("%s: read by the common form %v, %v", in, took, err)
			}
		}
	}
}

// FuzzDecode checks Registry.Decode on any data under each registered event
// type (and an unknown one) at any schema version, as checkDecode describes.
func FuzzDecode(f *testing.F) {
	r := fuzzRegistry(f)
	names := make([]string, 0, len(samples)+1)
	for _, e := range samples {
		names = append(names, e.EventType())
	}
	sort.Strings(names)
	names = append(names, "NoSuchEvent")
	for i, name := range names {
		k := uint8(i)
		if e := sampleOf(name); e != nil {
			f.Add(k, 1, []byte(envelopeOf(f, r, e).Data))
		}
		for _, d := range []string{"", "null", "{}", "[]", `"x"`, "{", `{"customer_id":null}`, `{"customer_id":"nope"}`, `{"Customer_ID":"0190f5a0-0000-7000-8000-0000000000c1"}`} {
			f.Add(k, 1, []byte(d))
		}
		f.Add(k, 0, []byte("{}"))
		f.Add(k, 2, []byte("{}"))
		f.Add(k, -1<<31, []byte("{}"))
	}
	index := func(name string) uint8 { return uint8(sort.SearchStrings(names[:len(samples)], name)) }
	for _, d := range []string{
		`{"total":"-12.50"}`, `{"total":"-999999999999999.99"}`, `{"total":"1000000000000000"}`, `{"total":"0.001"}`,
		`{"total":"NaN"}`, `{"total":"Inf"}`, `{"total":"-Inf"}`, `{"total":1250}`, `{"total":"12,50"}`, `{"total":"１２.５０"}`,
		`{"total":" 1.00"}`, `{"total":"\u0031.00"}`, `{"total":"+1.00"}`, `{"total":"1.00","total":"2.00"}`,
		`{"items":[{"product_id":"a","quantity":9223372036854775807,"unit_price":"999999999999999.99"}]}`,
		`{"items":[{"product_id":"a","quantity":9223372036854775808}]}`, `{"items":[{"quantity":"1"}]}`,
		`{"items":[null,{}]}`, `{"items":[` + strings.Repeat(`[`, 10001) + `]}`, `{"reason":"\ud800"}`, "{\"reason\":\"\xff\"}",
	} {
		f.Add(index("OrderCreated"), 1, []byte(d))
		f.Add(index("CreditReservationFailed"), 1, []byte(d))
	}
	f.Fuzz(func(t *testing.T, kind uint8, version int, data []byte) {
		name := names[int(kind)%len(names)]
		checkDecode(t, r, events.Envelope{EventType: name, SchemaVersion: version, Data: data})
	})
}

// checkDecode checks that r either refuses env with the error that fits
// (an unknown type, a version other than the current one, which is v1 for
// every event here, or data that does not decode into the type's Go struct)
// or decodes it into the registered Go type of its event type, with every
// amount within ±MaxMoney, and that the event encodes at the current
// version into data that decodes to the same event again, byte-stable on a
// second encoding.
func checkDecode(t *testing.T, r *events.Registry, env events.Envelope) {
	t.Helper()
	e, err := r.Decode(env)
	goType := registeredType(r, env.EventType)
	if err != nil {
		switch {
		case goType == nil:
			if !errors.Is(err, events.ErrUnknownEventType) {
				t.Fatalf("Decode of unknown type %q: %v, want ErrUnknownEventType", env.EventType, err)
			}
		case env.SchemaVersion != 1:
			if !errors.Is(err, events.ErrUnsupportedVersion) {
				t.Fatalf("Decode of %s v%d: %v, want ErrUnsupportedVersion", env.EventType, env.SchemaVersion, err)
			}
		default:
			if jerr := json.Unmarshal(env.Data, reflect.New(goType).Interface()); jerr == nil {
				t.Fatalf("Decode of %s %q: %v, though the data decodes into %v", env.EventType, env.Data, err, goType)
			}
		}
		return
	}
	if goType == nil || env.SchemaVersion != 1 {
		t.Fatalf("Decode accepted %s v%d", env.EventType, env.SchemaVersion)
	}
	if reflect.TypeOf(e) != goType || e.EventType() != env.EventType {
		t.Fatalf("Decode of %s returned a %T", env.EventType, e)
	}
	forMoney(reflect.ValueOf(e), func(path string, m events.Money) {
		if m > events.MaxMoney || m < -events.MaxMoney {
			t.Fatalf("Decode of %s %q: %s = %d is beyond MaxMoney", env.EventType, env.Data, path, int64(m))
		}
	})
	typ, v, data, err := r.Encode(e)
	if err != nil || typ != env.EventType || v != 1 {
		t.Fatalf("Encode(%+v) = %s v%d, %v", e, typ, v, err)
	}
	again, err := r.Decode(events.Envelope{EventType: typ, SchemaVersion: v, Data: data})
	if err != nil || !reflect.DeepEqual(again, e) {
		t.Fatalf("%s %q decoded as %+v, encoded as %s, decodes as %+v, %v", env.EventType, env.Data, e, data, again, err)
	}
	if _, _, data2, _ := r.Encode(again); !bytes.Equal(data2, data) {
		t.Fatalf("encoding is not stable:\n%s\n%s", data, data2)
	}
}

// registeredType is the Go type r decodes eventType into, or nil when r
// does not know eventType: asked of r itself, so that the check holds for
// events registered after this test was written. It assumes v1 is current.
func registeredType(r *events.Registry, eventType string) reflect.Type {
	e, err := r.Decode(events.Envelope{EventType: eventType, SchemaVersion: 1, Data: json.RawMessage("{}")})
	if errors.Is(err, events.ErrUnknownEventType) {
		return nil
	}
	if err != nil {
		panic(fmt.Sprintf("%s v1 does not decode {}: %v", eventType, err))
	}
	return reflect.TypeOf(e)
}

var moneyType = reflect.TypeFor[events.Money]()

// forMoney calls fn with every Money in v, a struct of an event.
func forMoney(v reflect.Value, fn func(path string, m events.Money)) {
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		switch {
		case v.Type() == moneyType:
			fn(path, events.Money(v.Int()))
		case v.Kind() == reflect.Struct:
			for i := range v.NumField() {
				walk(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		case v.Kind() == reflect.Slice:
			for i := range v.Len() {
				walk(path+"[]", v.Index(i))
			}
		}
	}
	walk(v.Type().Name(), v)
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(a, b []byte) bool {
	decode := func(b []byte) (any, bool) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		return v, d.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

// moneySyntax is the text ParseMoney documents: an optional minus, digits,
// and at most two decimal places after a dot.
var moneySyntax = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,2})?$`)

// canonicalMoney is how Money renders.
var canonicalMoney = regexp.MustCompile(`^-?(0|[1-9][0-9]*)\.[0-9]{2}$`)

// FuzzMoney checks every way an amount is read from text. ParseMoney accepts
// exactly the text of moneySyntax whose value is within ±MaxMoney, and then
// returns that value in cents (checked with exact rationals); it refuses
// everything else with ErrMoneySyntax, ErrMoneyPrecision or ErrMoneyRange.
// An accepted amount renders canonically and parses back to itself, also as
// JSON. Money.UnmarshalJSON accepts only a JSON string that ParseMoney
// accepts (never a number, null or anything else), with the same value.
func FuzzMoney(f *testing.F) {
	for _, s := range []string{
		"0", "12", "12.5", "12.50", "0.01", "007.10", "-3.00", "-0", "-0.00", "00000000000000000000000001.00",
		"999999999999999.99", "-999999999999999.99", "1000000000000000", "999999999999999.999", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "18446744073709551616", "1.005", "1.", ".5", "", "-", "--1", "-.5", "1.-5",
		"1e3", "1E3", "+1", " 1", "1 ", "1,00", "1_000", "0x10", "NaN", "nan", "Inf", "+Inf", "-Inf", "Infinity", "１２", "١٢",
		"12.٥٠", "12.5\x00", "\xff", "1.2.3", "1..2", `"12.50"`, `"12.5"`, `"-1"`, `""`, `"`, `"NaN"`, `"\u0031"`, `"1\"`, "12.50",
		"null", "true", "12.5", "1e2", "[\"1\"]", `{"a":"1"}`, ` "1.00" `, `"1.00"x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := events.ParseMoney(s)
		if err != nil {
			if !errors.Is(err, events.ErrMoneySyntax) && !errors.Is(err, events.ErrMoneyPrecision) && !errors.Is(err, events.ErrMoneyRange) {
				t.Fatalf("ParseMoney(%q): unexpected error %v", s, err)
			}
			if m != 0 {
				t.Fatalf("ParseMoney(%q) refused with %v but returned %d", s, err, int64(m))
			}
			if moneySyntax.MatchString(s) && !errors.Is(err, events.ErrMoneyRange) {
				t.Fatalf("ParseMoney(%q) refused a well-formed amount: %v", s, err)
			}
			if errors.Is(err, events.ErrMoneyRange) && inRange(s) {
				t.Fatalf("ParseMoney(%q) called an amount within ±MaxMoney too large", s)
			}
		} else {
			if !moneySyntax.MatchString(s) {
				t.Fatalf("ParseMoney(%q) accepted text that is not a decimal amount: %d", s, int64(m))
			}
			if m > events.MaxMoney || m < -events.MaxMoney {
				t.Fatalf("ParseMoney(%q) = %d, beyond MaxMoney", s, int64(m))
			}
			if want := cents(s); want.Cmp(big.NewRat(int64(m), 1)) != 0 {
				t.Fatalf("ParseMoney(%q) = %d cents, want %s", s, int64(m), want.RatString())
			}
			checkMoneyRoundTrip(t, m)
		}

		// The text as the contents of a JSON string: the same verdict.
		var j events.Money
		jerr := json.Unmarshal([]byte(`"`+s+`"`), &j)
		if (jerr == nil) != (err == nil) && json.Valid([]byte(`"`+s+`"`)) {
			t.Fatalf("ParseMoney(%q): %v; as a JSON string: %v", s, err, jerr)
		}
		if jerr == nil && j != m {
			t.Fatalf("ParseMoney(%q) = %d; as a JSON string %d", s, int64(m), int64(j))
		}

		// The text as a JSON value: only a string holding an amount.
		var v events.Money
		if err := json.Unmarshal([]byte(s), &v); err == nil {
			text := strings.TrimSpace(s) // whitespace around a JSON value is no part of it
			inner, ok := strings.CutPrefix(text, `"`)
			inner, ok2 := strings.CutSuffix(inner, `"`)
			want, perr := events.ParseMoney(inner)
			if !ok || !ok2 || perr != nil || want != v {
				t.Fatalf("Money.UnmarshalJSON accepted %q as %d", s, int64(v))
			}
		}
	})
}

func checkMoneyRoundTrip(t *testing.T, m events.Money) {
	t.Helper()
	str := m.String()
	if !canonicalMoney.MatchString(str) || (m == 0 && str != "0.00") {
		t.Fatalf("Money(%d).String() = %q, not canonical", int64(m), str)
	}
	if back, err := events.ParseMoney(str); err != nil || back != m {
		t.Fatalf("Money(%d) renders as %q, which parses as %d, %v", int64(m), str, int64(back), err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back events.Money
	if err := json.Unmarshal(b, &back); err != nil || back != m {
		t.Fatalf("Money(%d) as JSON %s reads back as %d, %v", int64(m), b, int64(back), err)
	}
}

// cents is the value of decimal text s in cents, exactly.
func cents(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic("not a decimal: " + s)
	}
	return r.Mul(r, big.NewRat(100, 1))
}

// inRange reports whether s is decimal text with at most two places whose
// value is within ±MaxMoney.
func inRange(s string) bool {
	if !moneySyntax.MatchString(s) {
		return false
	}
	c := cents(s)
	return c.Abs(c).Cmp(big.NewRat(int64(events.MaxMoney), 1)) <= 0
}
