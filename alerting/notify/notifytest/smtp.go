package notifytest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"mime"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPMessage is one message the SMTP fake accepted.
type SMTPMessage struct {
	From     string // MAIL FROM
	To       []string
	Subject  string // decoded
	Body     string // decoded (quoted-printable or base64), with \n line ends
	Header   netmail.Header
	Raw      []byte
	Username string // who authenticated, "" if no one did
}

// SMTPFake is an SMTP server on 127.0.0.1 without TLS that offers AUTH
// PLAIN (allowed without TLS), records the messages it accepts, and can be
// told to refuse them.
type SMTPFake struct {
	srv  *smtp.Server
	addr *net.TCPAddr
	log  *recorder[SMTPMessage]

	mu                 sync.Mutex
	username, password string // required when username is set
	failN, failCode    int
}

// NewSMTP starts an SMTP fake, stopped when t ends.
func NewSMTP(t testing.TB) *SMTPFake {
	t.Helper()
	f := &SMTPFake{log: newRecorder[SMTPMessage]()}
	f.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{f: f}, nil
	}))
	f.srv.Domain = "localhost"
	f.srv.AllowInsecureAuth = true
	f.srv.ReadTimeout, f.srv.WriteTimeout = 10*time.Second, 10*time.Second
	f.srv.MaxMessageBytes = maxBody
	f.srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("notifytest: SMTP listen: %v", err)
	}
	f.addr = ln.Addr().(*net.TCPAddr)
	served := make(chan struct{})
	go func() {
		defer close(served)
		f.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := f.srv.Shutdown(ctx); err != nil {
			f.srv.Close() // a client still connected
		}
		ln.Close() // in case Serve had not yet taken it when Shutdown looked
		<-served
	})
	return f
}

// Addr is the server's host:port.
func (f *SMTPFake) Addr() string { return f.addr.String() }

// Host is the server's address, 127.0.0.1.
func (f *SMTPFake) Host() string { return f.addr.IP.String() }

// Port is the server's port.
func (f *SMTPFake) Port() int { return f.addr.Port }

// SetCredentials makes the server require AUTH PLAIN with username and
// password before a message ("": no authentication required).
func (f *SMTPFake) SetCredentials(username, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.username, f.password = username, password
}

// FailNext refuses the next n messages with the SMTP reply code (4xx:
// try later, 5xx: never), at RCPT TO.
func (f *SMTPFake) FailNext(n, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failN, f.failCode = n, code
}

// Messages are the messages accepted so far, oldest first.
func (f *SMTPFake) Messages() []SMTPMessage { return f.log.snapshot() }

// WaitFor waits until cond holds of the accepted messages, failing t after
// timeout; it returns them.
func (f *SMTPFake) WaitFor(t testing.TB, cond func([]SMTPMessage) bool, timeout time.Duration) []SMTPMessage {
	t.Helper()
	return f.log.waitFor(t, cond, timeout)
}

// smtpSession is one connection's transaction.
type smtpSession struct {
	f        *SMTPFake
	username string // authenticated as
	refuse   int    // the reply code this transaction is refused with
	from     string
	to       []string
}

var _ smtp.AuthSession = (*smtpSession)(nil)

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		s.f.mu.Lock()
		want, wantPass := s.f.username, s.f.password
		s.f.mu.Unlock()
		if want != "" && (username != want || password != wantPass) {
			return smtp.ErrAuthFailed
		}
		s.username = username
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.f.username != "" && s.username == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.refuse = 0
	if s.f.failN > 0 {
		s.f.failN--
		s.refuse = s.f.failCode
	}
	s.from, s.to = from, nil
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.refuse != 0 {
		return &smtp.SMTPError{Code: s.refuse, EnhancedCode: smtp.EnhancedCode{s.refuse / 100, 0, 0},
			Message: "notifytest: refused as told"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := SMTPMessage{From: s.from, To: s.to, Raw: raw, Username: s.username}
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "not a message: " + err.Error()}
	}
	m.Header = msg.Header
	if m.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		m.Subject = msg.Header.Get("Subject")
	}
	body, err := decodeBody(msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad body: " + err.Error()}
	}
	m.Body = strings.ReplaceAll(string(body), "\r\n", "\n")
	s.f.log.add(m)
	return nil
}

func (s *smtpSession) Reset() { s.from, s.to, s.refuse = "", nil, 0 }

func (s *smtpSession) Logout() error { return nil }

// decodeBody undoes a single part's Content-Transfer-Encoding.
func decodeBody(cte string, r io.Reader) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		return io.ReadAll(quotedprintable.NewReader(r))
	case "base64":
		return io.ReadAll(base64.NewDecoder(base64.StdEncoding, r)) // it skips line breaks
	case "", "7bit", "8bit", "binary":
		return io.ReadAll(r)
	}
	return nil, errors.New("unknown Content-Transfer-Encoding " + strconv.Quote(cte))
}
