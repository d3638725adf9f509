package events

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseMoney(t *testing.T) {
	tests := []struct {
		in   string
		want Money
		err  error
	}{
		{"0", 0, nil},
		{"12", 1200, nil},
		{"12.5", 1250, nil},
		{"12.50", 1250, nil},
		{"0.01", 1, nil},
		{"007.10", 710, nil},
		{"-3.00", -300, nil},
		{"999999999999999.99", MaxMoney, nil},
		{"1000000000000000", 0, ErrMoneyRange},
		{"1.005", 0, ErrMoneyPrecision},
		{"1.", 0, ErrMoneySyntax},
		{".5", 0, ErrMoneySyntax},
		{"", 0, ErrMoneySyntax},
		{"-", 0, ErrMoneySyntax},
		{"1e3", 0, ErrMoneySyntax},
		{"+1", 0, ErrMoneySyntax},
		{" 1", 0, ErrMoneySyntax},
		{"1,00", 0, ErrMoneySyntax},
		{"NaN", 0, ErrMoneySyntax},
	}
	for _, tt := range tests {
		got, err := ParseMoney(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("ParseMoney(%q) = %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestMoneyString(t *testing.T) {
	for m, want := range map[Money]string{0: "0.00", 5: "0.05", 1250: "12.50", -1: "-0.01", -1250: "-12.50", MaxMoney: "999999999999999.99"} {
		if got := m.String(); got != want {
			t.Errorf("Money(%d).String() = %q, want %q", int64(m), got, want)
		}
	}
}

func TestMoneyJSON(t *testing.T) {
	var v struct{ A, B Money }
	if err := json.Unmarshal([]byte(`{"A":"0.10","B":"0.2"}`), &v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(struct{ Sum Money }{v.A + v.B})
	if string(b) != `{"Sum":"0.30"}` {
		t.Errorf("sum = %s", b)
	}
	for _, bad := range []string{`{"A":12.5}`, `{"A":"1.234"}`, `{"A":null}`, `{"A":true}`} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestMoneyMul(t *testing.T) {
	if got, ok := Money(1000).Mul(3); !ok || got != 3000 {
		t.Errorf("10.00 * 3 = %v, %v", got, ok)
	}
	if _, ok := MaxMoney.Mul(2); ok {
		t.Error("MaxMoney * 2 did not report overflow")
	}
}
