package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// The saga view in a real headless Chromium: an order placed over REST
// appears in the open list without a reload, its timeline shows both
// services' steps in order with their offsets and the customer's credit,
// event data is shown as text (a customer named like a script runs
// nothing), and unknown IDs get the friendly 404. Screenshots go to the
// test's artifact directory (kept with go test -artifacts -outputdir DIR).
func TestSagaViewInABrowser(t *testing.T) {
	chromium := findChromium(t)
	t.Setenv("JAEGER_UI_URL", "http://jaeger.example:16686")
	s := startSystem(t)
	b := newBrowser(t, chromium)
	ui := s.projector.url + "/ui"

	ada := s.register("Ada Lovelace", "100.00")
	evilName := "<script>alert(1)</script>"
	evil := s.register(evilName, "50.00")
	// Sagas that were decided before the page opened: one refused for
	// credit, one for an unknown customer.
	s.place(ada, 1, "500.00")
	s.place(uuid.New(), 1, "1.00")

	b.open(ui)
	b.do(chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))

	// Placed now, over REST, with a trace context: it must show up live.
	const traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var placed struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	mustCall(t, 201, &placed, "POST", s.order.url+"/orders",
		`{"customer_id": "`+ada.String()+`", "items": [{"product_id": "sku-1", "quantity": 2, "unit_price": "5.00"}]}`,
		"traceparent", traceParent)
	order := placed.OrderID
	row := fmt.Sprintf(`#saga-%s`, order)
	b.wait(row + `[data-status="APPROVED"][data-steps="4"]`)
	// The sagas placed before are decided too, whether their decisions were
	// committed before the page was rendered, before its feed subscribed,
	// or after.
	run(b, chromedp.Poll[bool](`document.querySelectorAll('tr[data-status="REJECTED"][data-steps="3"]').length === 2`))
	if !run(b, chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the page was reloaded: the order did not come in over the live feed")
	}
	b.screenshot("sagas.png")

	// Its timeline, through the link in its row.
	b.do(chromedp.Click(chromedp.CSS(row + ` a.order`)))
	b.wait(`#timeline ol.steps`)
	type step struct {
		Type, Offset, Before, After string
	}
	steps := run(b, chromedp.Evaluate[[]step](`Array.from(document.querySelectorAll('#timeline li.step'), li => ({
		Type: li.dataset.type,
		Offset: li.querySelector('.offset').textContent,
		Before: (li.querySelector('.credit .before') || {}).textContent || '',
		After: (li.querySelector('.credit .after') || {}).textContent || '',
	}))`))
	var types []string
	for _, st := range steps {
		types = append(types, st.Type)
	}
	if want := []string{"OrderCreated", "CreditReserved", "OrderApproved", "CreditSettled"}; !slices.Equal(types, want) {
		t.Fatalf("the timeline shows %v, want %v", types, want)
	}
	var last time.Duration
	for i, st := range steps {
		d, err := parseOffset(st.Offset)
		switch {
		case err != nil:
			t.Errorf("step %d (%s): %v", i, st.Type, err)
		case i == 0 && d != 0:
			t.Errorf("the OrderCreated is at %s, not +0", st.Offset)
		case d < last:
			t.Errorf("step %d (%s) at %s, before the step ahead of it", i, st.Type, st.Offset)
		}
		last = d
	}
	if st := steps[1]; st.Before != "100.00" || st.After != "90.00" {
		t.Errorf("CreditReserved: available %s → %s, want 100.00 → 90.00", st.Before, st.After)
	}
	if st := steps[3]; st.Before != "90.00" || st.After != "90.00" {
		t.Errorf("CreditSettled: available %s → %s, want 90.00 → 90.00", st.Before, st.After)
	}
	if href := b.eval(`document.querySelector('#timeline a.trace').getAttribute('href')`); href != "http://jaeger.example:16686/trace/0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("the trace link is %q", href)
	}
	b.screenshot("timeline.png")

	// A customer named like a script: shown as text, in the row the live
	// feed adds and on the customer's page; no dialog opens (newBrowser
	// fails the test on any).
	b.open(ui)
	evilOrder := s.place(evil, 1, "5.00")
	b.wait(fmt.Sprintf(`#saga-%s[data-status="APPROVED"][data-steps="4"]`, evilOrder))
	if name := b.text(fmt.Sprintf(`#saga-%s .customer`, evilOrder)); name != evilName {
		t.Errorf("the live row shows the customer as %q", name)
	}
	b.open(s.projector.url + "/ui/customers/" + evil.String())
	if name := b.text(`h1.customer-name`); name != evilName {
		t.Errorf("the customer's page shows the name as %q", name)
	}
	if n := run(b, chromedp.Evaluate[int](`document.querySelectorAll('main script').length`)); n != 0 {
		t.Errorf("the customer's page has %d script elements", n)
	}
	if avail := b.text(`#available`); avail != "45.00" {
		t.Errorf("the customer's available credit is %q, want 45.00", avail)
	}
	b.wait(fmt.Sprintf(`#saga-%s`, evilOrder))
	b.screenshot("customer.png")

	// Unknown and malformed IDs: a friendly 404 page.
	for i, path := range []string{"/ui/orders/" + uuid.NewString(), "/ui/customers/" + uuid.NewString(), "/ui/orders/not-an-id"} {
		resp, err := http.Get(s.projector.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %s, want a 404 page", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		b.open(s.projector.url + path)
		if h := b.text(`main h1`); h != "Not found" {
			t.Errorf("%s shows %q", path, h)
		}
		if i == 0 {
			b.screenshot("notfound.png")
		}
	}
}

// findChromium returns the browser to drive, or skips the test. CI sets
// REQUIRE_CHROMIUM=1 so that a missing browser fails there.
func findChromium(t *testing.T) string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_CHROMIUM") != "" {
		t.Fatal("no Chromium found, and REQUIRE_CHROMIUM is set (Debian: apt-get install chromium)")
	}
	t.Skip("no Chromium found (Debian: apt-get install chromium; CI installs it)")
	return ""
}

// browser is a headless Chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // where screenshots go
}

func newBrowser(t *testing.T, execPath string) *browser {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.NoSandbox, // as root, in a container
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 760),
	)...)
	t.Cleanup(cancelAlloc) // stops the browser and waits for it
	// A dialog blocks the page until answered: the listener only reports
	// it, a goroutine dismisses it.
	dialogs := make(chan string, 8)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithListener(func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			select {
			case dialogs <- string(d.Type) + ": " + d.Message:
			default:
			}
		}
	}))
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx
		t.Fatalf("start %s: %v", execPath, err)
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-dialogs:
				t.Errorf("a JavaScript dialog opened: %s", d)
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}
		}
	})
	b := &browser{t: t, ctx: ctx, dir: t.ArtifactDir()}
	t.Logf("screenshots: %s", b.dir)
	return b
}

// run runs an action that returns a value, within 20 s.
func run[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

func (b *browser) do(a chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	run(b, a)
}

// open loads url, and on a page with a live feed waits until it is
// connected.
func (b *browser) open(url string) {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
	if run(b, chromedp.Evaluate[bool](`document.querySelector('[data-feed]') !== null`)) {
		b.wait(`body[data-live="open"]`)
	}
}

// text returns the text content of the first element that matches the CSS
// selector. It reads it in one script, as the live feed may replace the
// element between two steps of a query.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return b.eval(`document.querySelector(` + strconv.Quote(sel) + `).textContent`)
}

func (b *browser) eval(js string) string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[string](js))
}

// wait waits until an element matching the CSS selector is visible.
func (b *browser) wait(sel string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS(sel)))
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := run(b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// parseOffset reads a timeline offset: "+0 ms", "+3.2 ms", "+1.20 s".
func parseOffset(s string) (time.Duration, error) {
	num, unit, ok := strings.Cut(strings.TrimPrefix(s, "+"), " ")
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || !strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("offset %q is not +<number> <unit>", s)
	}
	switch unit {
	case "ms":
		return time.Duration(f * float64(time.Millisecond)), nil
	case "s":
		return time.Duration(f * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("offset %q has an unknown unit", s)
}
