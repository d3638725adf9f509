package projector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/eventsaga/eventsaga/internal/platform"
	"github.com/eventsaga/eventsaga/pkg/events"
	"github.com/eventsaga/eventsaga/pkg/outbox"
)

// RebuildOptions tune a rebuild.
type RebuildOptions struct {
	// CaughtUp is the total lag, in events, at or below which the new
	// generation is made current; 0 waits for no lag at all, which with
	// writes going on may be a while. Default 100.
	CaughtUp int64
	// Progress receives a line at each check; nil for none.
	Progress io.Writer
	// CheckEvery is how often the lag is measured (and progress shown); a
	// second if zero.
	CheckEvery time.Duration
}

// RebuildResult says what a rebuild did.
type RebuildResult struct {
	Generation int
	Events     int64
	Took       time.Duration
}

// Rebuild builds a new generation of the read models from the start of
// the topics, in tables of its own and as a consumer group of its own, while
// the running projector keeps answering queries from the current
// generation. The tables are loaded in bulk (bulk.go). When the new
// generation has caught up with the topics, the rebuild stops consuming
// (committing its offsets), finishes the tables, and makes the generation
// current; a running projector notices within half a second and goes on as
// the new generation's group, from the offsets this rebuild committed.
// Tables older than the replaced generation are dropped.
func Rebuild(ctx context.Context, cfg Config, log *slog.Logger, opts RebuildOptions) (RebuildResult, error) {
	if opts.CaughtUp == 0 {
		opts.CaughtUp = 100
	}
	if opts.CaughtUp < 0 {
		opts.CaughtUp = 0
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = time.Second
	}
	reg := events.NewRegistry()
	if err := registry(reg); err != nil {
		return RebuildResult{}, err
	}
	pool, err := platform.OpenDB(ctx, databaseURL(cfg), cfg.TracerProvider, Migration())
	if err != nil {
		return RebuildResult{}, fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	st := store{pool: pool}
	g, err := st.startBulk(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	res := RebuildResult{Generation: int(g)}
	cons, err := newProjection(cfg, log, pool, reg, g, nil, projectionTuning{batchSize: 5000, pollRecords: 50000, bulk: true})
	if err != nil {
		return res, err
	}
	start := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- cons.Run(runCtx) }()

	group := groupOf(cfg.ConsumerGroup, g)
	tick := time.NewTicker(opts.CheckEvery)
	defer tick.Stop()
	var last int64
	for caughtUp := false; !caughtUp; {
		select {
		case <-ctx.Done():
			stop()
			<-done
			st.abandon(context.WithoutCancel(ctx), g)
			return res, fmt.Errorf("rebuild of generation %d abandoned: %w", g, ctx.Err())
		case err := <-done:
			st.abandon(context.WithoutCancel(ctx), g)
			return res, errors.Join(fmt.Errorf("rebuild of generation %d: the projection stopped", g), err)
		case <-tick.C:
		}
		lag, err := outbox.GroupLag(ctx, cons.Client(), group, cfg.OrdersTopic, cfg.CustomersTopic)
		if err != nil {
			log.Warn("could not measure the rebuild's lag", "err", err)
			continue
		}
		applied := cons.Stats().Applied
		if opts.Progress != nil {
			rate := float64(applied-last) / opts.CheckEvery.Seconds()
			fmt.Fprintf(opts.Progress, "generation %d: %d events projected (%.0f/s), %d behind\n", g, applied, rate, lag.Total())
		}
		last = applied
		caughtUp = lag.Total() <= opts.CaughtUp
	}
	// The bulk load ends before the tables are finished: stopping commits
	// the offsets the running projector will go on from, in the finished
	// tables, once it has switched.
	stop()
	if err := <-done; err != nil {
		st.abandon(context.WithoutCancel(ctx), g)
		return res, err
	}
	if err := st.finishBulk(ctx, g); err != nil {
		st.abandon(context.WithoutCancel(ctx), g)
		return res, err
	}
	if err := st.switchTo(ctx, g); err != nil {
		return res, err
	}
	res.Events, res.Took = cons.Stats().Applied, time.Since(start)
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "generation %d is current: %d events in %v\n", g, res.Events, res.Took.Round(time.Millisecond))
	}
	return res, nil
}
