package platform

import (
	"context"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// The pool's statistics are read on scrape, labelled with the pool's name.
func TestPoolCollector(t *testing.T) {
	pool := testenv.Postgres(t)
	reg := NewRegistry()
	if err := reg.Register(NewPoolCollector("main", pool)); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()

	got := map[string]float64{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "eventsaga_db_pool_") {
			continue
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "pool" || m.GetLabel()[0].GetValue() != "main" {
				t.Errorf("%s labelled %v, want pool=main", name, m.GetLabel())
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if len(got) != 11 {
		t.Errorf("%d pool metrics, want 11: %v", len(got), got)
	}
	maxConns := float64(pool.Config().MaxConns)
	if got["eventsaga_db_pool_acquired_conns"] != 1 || got["eventsaga_db_pool_max_conns"] != maxConns ||
		got["eventsaga_db_pool_acquires_total"] < 1 || got["eventsaga_db_pool_total_conns"] < 1 {
		t.Errorf("pool metrics %v; want 1 acquired, max %v, at least 1 acquire and 1 connection", got, maxConns)
	}
	// The registry has the runtime's and the process's metrics too.
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if !has(fams, name) {
			t.Errorf("no %s", name)
		}
	}
}

func has(fams []*dto.MetricFamily, name string) bool {
	for _, f := range fams {
		if f.GetName() == name {
			return true
		}
	}
	return false
}
