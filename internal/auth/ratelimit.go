package auth

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/eventsaga/eventsaga/internal/httpapi"
)

// DefaultWriteRate is WRITE_RATE_LIMIT unless set: writes a second per
// caller, with a burst of twice as many. A person placing orders by hand,
// or a shop's checkout for one customer, stays far below it; a script
// hammering one account or the whole API from one address does not.
const DefaultWriteRate = 50

// Limits are the per-caller limits on writes (POST, PUT, PATCH, DELETE).
type Limits struct {
	// WriteRate is writes a second per caller (WRITE_RATE_LIMIT: a number,
	// or off); 0 is no limit.
	WriteRate float64
	// WriteBurst is how many writes a caller may send at once after a quiet
	// spell (WRITE_RATE_BURST); 0 means twice WriteRate.
	WriteBurst int
}

// LoadLimits reads Limits from getenv.
func LoadLimits(getenv func(string) string) (Limits, error) {
	l := Limits{WriteRate: DefaultWriteRate}
	switch v := strings.TrimSpace(getenv("WRITE_RATE_LIMIT")); v {
	case "":
	case "off", "0":
		l.WriteRate = 0
	default:
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || math.IsInf(r, 0) {
			return l, fmt.Errorf("WRITE_RATE_LIMIT %q: writes a second per caller, a positive number, or off", v)
		}
		l.WriteRate = r
	}
	if v := strings.TrimSpace(getenv("WRITE_RATE_BURST")); v != "" {
		b, err := strconv.Atoi(v)
		if err != nil || b < 1 {
			return l, fmt.Errorf("WRITE_RATE_BURST %q: a whole number of writes, 1 or more", v)
		}
		l.WriteBurst = b
	}
	return l, nil
}

// Limit returns the middleware that holds each caller to l's write rate:
// a write over it is a 429 problem with Retry-After, before any handler
// runs. The caller is the token's sub (Require runs first), or on the open
// API the client's address: the connection's, not a forwarded header a
// client could make up.
func Limit(l Limits) echo.MiddlewareFunc {
	burst := l.WriteBurst
	if burst == 0 {
		burst = max(1, int(math.Ceil(2*l.WriteRate)))
	}
	// Made once: echo wraps the handler of each request anew.
	callers := &limiters{rate: rate.Limit(l.WriteRate), burst: burst, byKey: map[string]*limiter{}}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if l.WriteRate <= 0 {
			return next
		}
		return func(c echo.Context) error {
			switch c.Request().Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
				return next(c)
			}
			if wait := callers.take(callerKey(c), time.Now()); wait > 0 {
				secs := int(math.Ceil(wait.Seconds()))
				c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
				return httpapi.TooManyRequests(fmt.Sprintf("more than %g writes a second from this caller; try again in %d s", l.WriteRate, secs))
			}
			return next(c)
		}
	}
}

func callerKey(c echo.Context) string {
	if p, ok := Caller(c); ok {
		return "sub:" + p.Subject.String()
	}
	host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		host = c.Request().RemoteAddr
	}
	return "addr:" + host
}

// limiters is a token bucket per caller. A bucket left alone long enough to
// fill up again is the same as a new one, so those are dropped: the map
// holds only the callers of the last few seconds.
type limiters struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	byKey map[string]*limiter
	swept time.Time
}

type limiter struct {
	bucket *rate.Limiter
	last   time.Time
}

// take spends one write of key's bucket at now, and returns 0, or, when the
// bucket is empty, how long until it holds one (nothing is spent then).
func (ls *limiters) take(key string, now time.Time) time.Duration {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	full := time.Duration(float64(ls.burst) / float64(ls.rate) * float64(time.Second))
	if now.Sub(ls.swept) > full {
		for k, l := range ls.byKey {
			if now.Sub(l.last) > full {
				delete(ls.byKey, k)
			}
		}
		ls.swept = now
	}
	l, ok := ls.byKey[key]
	if !ok {
		l = &limiter{bucket: rate.NewLimiter(ls.rate, ls.burst)}
		ls.byKey[key] = l
	}
	l.last = now
	r := l.bucket.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}
