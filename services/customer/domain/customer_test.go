package domain

import (
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/events/customers"
)

var (
	cid        = uuid.MustParse("0190f5a0-0000-7000-8000-0000000000c1")
	order1     = uuid.MustParse("0190f5a0-0000-7000-8000-000000000001")
	order2     = uuid.MustParse("0190f5a0-0000-7000-8000-000000000002")
	registered = customers.CustomerRegistered{CustomerID: cid, Name: "Ada", CreditLimit: 10000}
	reserved1  = customers.CreditReserved{CustomerID: cid, OrderID: order1, Amount: 6000}
)

func given(evs ...events.Event) Customer {
	var c Customer
	for _, e := range evs {
		c = Apply(c, e)
	}
	return c
}

func TestRegister(t *testing.T) {
	got, err := Register(cid, "  Ada  ", 10000)
	if err != nil || !reflect.DeepEqual(got, []events.Event{registered}) {
		t.Fatalf("Register = %v, %v", got, err)
	}
	for name, tt := range map[string]struct {
		name  string
		limit events.Money
		field string
	}{
		"empty name":     {" ", 1, "name"},
		"long name":      {strings.Repeat("é", MaxNameLength+1), 1, "name"},
		"control char":   {"A\nB", 1, "name"},
		"negative limit": {"Ada", -1, "credit_limit"},
	} {
		_, err := Register(cid, tt.name, tt.limit)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCreditDecisions(t *testing.T) {
	released1 := customers.CreditReleased{CustomerID: cid, OrderID: order1, Amount: 6000}
	tests := []struct {
		name     string
		given    []events.Event
		when     func(Customer) ([]events.Event, error)
		then     []events.Event
		err      error
		reserved events.Money // after the events
	}{
		{"reserve within limit", []events.Event{registered},
			func(c Customer) ([]events.Event, error) { return c.ReserveCredit(order1, 6000) },
			[]events.Event{reserved1}, nil, 6000},
		{"reserve exactly what is left", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ReserveCredit(order2, 4000) },
			[]events.Event{customers.CreditReserved{CustomerID: cid, OrderID: order2, Amount: 4000}}, nil, 10000},
		{"refuse beyond limit", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ReserveCredit(order2, 4001) },
			[]events.Event{customers.CreditReservationFailed{CustomerID: cid, OrderID: order2, Amount: 4001, Reason: customers.ReasonInsufficientCredit}}, nil, 6000},
		{"refuse unknown customer", nil,
			func(c Customer) ([]events.Event, error) {
				c.ID = cid // the stream's ID, as the repository gives it
				return c.ReserveCredit(order1, 1)
			},
			[]events.Event{customers.CreditReservationFailed{CustomerID: cid, OrderID: order1, Amount: 1, Reason: customers.ReasonUnknownCustomer}}, nil, 0},
		{"same order again: nothing", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ReserveCredit(order1, 6000) },
			nil, nil, 6000},
		{"negative amount", []events.Event{registered},
			func(c Customer) ([]events.Event, error) { return c.ReserveCredit(order1, -1) },
			nil, &ValidationError{}, 0},
		{"release held credit", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ReleaseCredit(order1), nil },
			[]events.Event{released1}, nil, 0},
		{"release twice: nothing", []events.Event{registered, reserved1, released1},
			func(c Customer) ([]events.Event, error) { return c.ReleaseCredit(order1), nil },
			nil, nil, 0},
		{"release what was refused: nothing", []events.Event{registered},
			func(c Customer) ([]events.Event, error) { return c.ReleaseCredit(order2), nil },
			nil, nil, 0},
		{"raise limit", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(20000) },
			[]events.Event{customers.CreditLimitChanged{CustomerID: cid, CreditLimit: 20000}}, nil, 6000},
		{"lower limit to reserved", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(6000) },
			[]events.Event{customers.CreditLimitChanged{CustomerID: cid, CreditLimit: 6000}}, nil, 6000},
		{"lower limit below reserved", []events.Event{registered, reserved1},
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(5999) },
			nil, ErrLimitBelowReserved, 6000},
		{"same limit: nothing", []events.Event{registered},
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(10000) },
			nil, nil, 0},
		{"negative limit", []events.Event{registered},
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(-5) },
			nil, &ValidationError{}, 0},
		{"limit of unknown customer", nil,
			func(c Customer) ([]events.Event, error) { return c.ChangeCreditLimit(5) },
			nil, ErrNotFound, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := given(tt.given...)
			got, err := tt.when(c)
			if ve, ok := tt.err.(*ValidationError); ok {
				if !errors.As(err, &ve) {
					t.Fatalf("err %v, want a validation error", err)
				}
			} else if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.then) {
				t.Fatalf("got %v, want %v", got, tt.then)
			}
			after := c
			for _, e := range got {
				after = Apply(after, e)
			}
			if after.Reserved != tt.reserved {
				t.Errorf("reserved %v, want %v", after.Reserved, tt.reserved)
			}
			var sum events.Money
			for _, a := range after.Reservations.All() {
				sum += a
			}
			if sum != after.Reserved {
				t.Errorf("reserved %v but reservations sum to %v", after.Reserved, sum)
			}
		})
	}
}

// Apply must not change the state it was given: a staged event may never
// commit, and the caller's state must then be as it was.
func TestApplyLeavesInputAlone(t *testing.T) {
	c := given(registered, reserved1)
	_ = Apply(c, customers.CreditReserved{CustomerID: cid, OrderID: order2, Amount: 1})
	_ = Apply(c, customers.CreditReleased{CustomerID: cid, OrderID: order1, Amount: 6000})
	if a, held := c.Reservations.Get(order1); c.Reservations.Len() != 1 || !held || a != 6000 {
		t.Errorf("input changed: %v", maps.Collect(c.Reservations.All()))
	}
}
