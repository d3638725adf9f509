package events

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

// PriceSet is at schema v2: v1 had "price" as a JSON number of cents and no
// currency.
type PriceSet struct {
	SKU      string `json:"sku"`
	Price    Money  `json:"price"`
	Currency string `json:"currency"`
}

func (PriceSet) EventType() string { return "PriceSet" }

func priceRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	if err := Register[PriceSet](r, 2); err != nil {
		t.Fatal(err)
	}
	err := r.AddUpcaster("PriceSet", 1, func(data json.RawMessage) (json.RawMessage, error) {
		var v1 struct {
			SKU   string `json:"sku"`
			Price int64  `json:"price"`
		}
		if err := json.Unmarshal(data, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(PriceSet{SKU: v1.SKU, Price: Money(v1.Price), Currency: "EUR"})
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryUpcastsOldVersions(t *testing.T) {
	r := priceRegistry(t)
	got, err := r.Decode(Envelope{EventType: "PriceSet", SchemaVersion: 1, Data: json.RawMessage(`{"sku":"a","price":1250}`)})
	if err != nil {
		t.Fatal(err)
	}
	if want := (PriceSet{SKU: "a", Price: 1250, Currency: "EUR"}); got != want {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	got, err = r.Decode(Envelope{EventType: "PriceSet", SchemaVersion: 2, Data: json.RawMessage(`{"sku":"b","price":"1.00","currency":"USD"}`)})
	if err != nil || got != (PriceSet{SKU: "b", Price: 100, Currency: "USD"}) {
		t.Errorf("decoded %+v, %v", got, err)
	}
}

func TestRegistryRefusals(t *testing.T) {
	r := priceRegistry(t)
	if _, err := r.Decode(Envelope{EventType: "Nope", SchemaVersion: 1, Data: json.RawMessage(`{}`)}); !errors.Is(err, ErrUnknownEventType) {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := r.Decode(Envelope{EventType: "PriceSet", SchemaVersion: 3, Data: json.RawMessage(`{}`)}); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("future version: %v", err)
	}
	if err := Register[PriceSet](r, 3); err == nil {
		t.Error("duplicate registration accepted")
	}
	typ, v, data, err := r.Encode(PriceSet{SKU: "c", Price: 5})
	if err != nil || typ != "PriceSet" || v != 2 || string(data) != `{"sku":"c","price":"0.05","currency":""}` {
		t.Errorf("Encode = %s %d %s %v", typ, v, data, err)
	}
	if _, _, _, err := r.Encode(&PriceSet{}); err == nil {
		t.Error("Encode accepted a pointer to a type registered as a value")
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	in := Envelope{
		EventID: uuid.New(), EventType: "PriceSet", SchemaVersion: 2, AggregateType: "product",
		AggregateID: uuid.New(), AggregateVersion: 3, OccurredAt: at,
		CorrelationID: uuid.New(), CausationID: uuid.New(), Data: json.RawMessage(`{"sku":"a"}`),
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	_ = json.Unmarshal(b, &fields)
	if fields["occurred_at"] != "2026-11-23T10:00:00.123456Z" {
		t.Errorf("occurred_at = %v", fields["occurred_at"])
	}
	out, err := ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if !out.OccurredAt.Equal(in.OccurredAt) || out.EventID != in.EventID || string(out.Data) != string(in.Data) || out.AggregateVersion != 3 {
		t.Errorf("round trip: %+v != %+v", out, in)
	}
}

func TestParseEnvelopeRefusesGarbage(t *testing.T) {
	for _, bad := range []string{
		`not json`,
		`{}`,
		`{"event_id":"00000000-0000-0000-0000-000000000000","event_type":"X","schema_version":1,"aggregate_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff","aggregate_version":1,"occurred_at":"2026-01-01T00:00:00Z","data":{}}`,
		`{"event_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff","event_type":"X","schema_version":1,"aggregate_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff","aggregate_version":1,"occurred_at":"2026-01-01T00:00:00Z","data":[1]}`,
		`{"event_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff","event_type":"X","schema_version":1,"aggregate_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff","aggregate_version":1,"occurred_at":"yesterday","data":{}}`,
	} {
		if _, err := ParseEnvelope([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}
