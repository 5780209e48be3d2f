package notify_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/restartcoord/restartcoord/alerting/notify"
	"github.com/restartcoord/restartcoord/alerting/notify/notifytest"
	"github.com/restartcoord/restartcoord/schema"
)

func newSlack(t *testing.T) (*notify.Slack, *notifytest.SlackFake) {
	t.Helper()
	fake := notifytest.NewSlack(t)
	s, err := notify.NewSlack("chat", fake.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, fake
}

func TestSlackMessage(t *testing.T) {
	s, fake := newSlack(t)
	n := firing(schema.AlertRestartFailed, "node-2")
	n.Alert.Message = "exit 3 <stderr> & more"
	if err := s.Notify(testCtx(t), n); err != nil {
		t.Fatal(err)
	}
	if err := s.Notify(testCtx(t), resolved(n)); err != nil {
		t.Fatal(err)
	}
	msgs := fake.WaitFor(t, func(m []notifytest.SlackMessage) bool { return len(m) == 2 }, time.Second)

	fire, res := msgs[0], msgs[1]
	for _, want := range []string{"[CRITICAL]", "restart_failed", "node-2", "exit 3 &lt;stderr&gt; &amp; more"} {
		if !strings.Contains(fire.Text, want) {
			t.Errorf("got text %q, want it to hold %q", fire.Text, want)
		}
	}
	if !strings.Contains(res.Text, "RESOLVED") || !strings.Contains(res.Text, "restart_failed on node-2") {
		t.Errorf("got resolution text %q, want RESOLVED and what resolved", res.Text)
	}
	if len(fire.Blocks) == 0 || fire.Blocks[0]["type"] != "header" {
		t.Errorf("got blocks %v, want a header first", fire.Blocks)
	}
	if got := fire.Header.Get("User-Agent"); got != notify.UserAgent {
		t.Errorf("got User-Agent %q, want %q", got, notify.UserAgent)
	}
}

func TestSlackErrors(t *testing.T) {
	s, fake := newSlack(t)
	n := firing(schema.AlertSlowRestart, "node-4")

	fake.FailNext(1, http.StatusTooManyRequests, "2")
	wantClass(t, s.Notify(testCtx(t), n), http.StatusTooManyRequests, true, 2*time.Second)

	fake.FailNext(1, http.StatusNotFound, "")
	wantClass(t, s.Notify(testCtx(t), n), http.StatusNotFound, false, 0)

	fake.SetDown(true)
	wantClass(t, s.Notify(testCtx(t), n), http.StatusServiceUnavailable, true, 0)
}

func TestSlackWantsOK(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>a login page</html>"))
	}))
	t.Cleanup(srv.Close)
	s, err := notify.NewSlack("chat", srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, s.Notify(testCtx(t), firing(schema.AlertSlowRestart, "node-4")), http.StatusOK, false, 0)
}
