package notify

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// Email TLS modes (EmailConfig.TLS).
const (
	EmailSTARTTLS = "starttls" // plain connection upgraded with STARTTLS, which the server must offer
	EmailTLS      = "tls"      // implicit TLS from the first byte (SMTPS)
	EmailNoTLS    = "none"     // no encryption: credentials are then sent only to localhost
)

// EmailConfig is an email receiver's SMTP server and addresses.
type EmailConfig struct {
	Host string
	// Port is the server's port; 0 is the usual one for TLS: 587 for
	// starttls, 465 for tls, 25 for none.
	Port int
	// Username and Password authenticate with AUTH PLAIN (or LOGIN, if the
	// server offers only that); no Username, no authentication.
	Username, Password string
	From               string   // the sender address, "Name <addr>" or "addr"
	To                 []string // one address or more
	// TLS is EmailSTARTTLS (the default, if empty), EmailTLS or EmailNoTLS.
	TLS string
	// Timeout bounds each SMTP exchange and the connection (DefaultTimeout
	// if 0); the context of Notify bounds the whole delivery too.
	Timeout time.Duration
}

// WithDefaults is c with its empty TLS, Port and Timeout filled in.
func (c EmailConfig) WithDefaults() EmailConfig {
	if c.TLS == "" {
		c.TLS = EmailSTARTTLS
	}
	if c.Port == 0 {
		switch c.TLS {
		case EmailTLS:
			c.Port = 465
		case EmailNoTLS:
			c.Port = 25
		default:
			c.Port = 587
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate checks c (defaults applied): a host, a port, a valid sender and
// recipients, a known TLS mode, a positive timeout, no password without a
// username. Its errors never hold the password.
func (c EmailConfig) Validate() error {
	switch {
	case c.Host == "":
		return errors.New("no SMTP host")
	case strings.ContainsAny(c.Host, " /:") && net.ParseIP(c.Host) == nil:
		return fmt.Errorf("SMTP host %q is not a host name or address", c.Host)
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("SMTP port %d is not 1 to 65535", c.Port)
	case c.TLS != EmailSTARTTLS && c.TLS != EmailTLS && c.TLS != EmailNoTLS:
		return fmt.Errorf("TLS %q is not one of starttls, tls, none", c.TLS)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout %v is not positive", c.Timeout)
	case c.Password != "" && c.Username == "":
		return errors.New("a password but no username")
	case len(c.To) == 0:
		return errors.New("no recipient (to)")
	}
	if _, err := netmail.ParseAddress(c.From); err != nil {
		return fmt.Errorf("from %q: %w", c.From, err)
	}
	for _, to := range c.To {
		if _, err := netmail.ParseAddress(to); err != nil {
			return fmt.Errorf("to %q: %w", to, err)
		}
	}
	return nil
}

// Email sends notifications as plain-text mail through an SMTP server.
type Email struct {
	name string
	cfg  EmailConfig
	from *netmail.Address
	to   []*netmail.Address
}

// NewEmail is the receiver name sending through cfg's server (defaults
// applied). It returns cfg's Validate error.
func NewEmail(name string, cfg EmailConfig) (*Email, error) {
	if name == "" {
		return nil, errors.New("email receiver: no name")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("email receiver %s: %w", name, err)
	}
	e := &Email{name: name, cfg: cfg}
	e.from, _ = netmail.ParseAddress(cfg.From) // Validate parsed them
	for _, to := range cfg.To {
		a, _ := netmail.ParseAddress(to)
		e.to = append(e.to, a)
	}
	return e, nil
}

// Name is the receiver's name.
func (e *Email) Name() string { return e.name }

// Type is TypeEmail.
func (e *Email) Type() string { return TypeEmail }

// Notify sends one message to every recipient, in one SMTP transaction. It
// returns a *DeliveryError: SMTP 4xx, connection and TLS failures are
// retryable, SMTP 5xx (a recipient refused, authentication failed) not.
func (e *Email) Notify(ctx context.Context, n Notification) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return &DeliveryError{Receiver: e.name, Retryable: true, Err: err}
	}
	msg := e.message(n, time.Now())

	// The connection is closed when ctx ends, which ends any SMTP exchange
	// under way (go-mail itself heeds ctx only while dialling), and when
	// Notify returns (go-mail leaves it open after a failed EHLO, STARTTLS
	// or AUTH).
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := e.dialer()
	addr := net.JoinHostPort(e.cfg.Host, strconv.Itoa(e.cfg.Port)) // go-mail's own is wrong for IPv6
	c, err := mail.NewClient(e.cfg.Host, e.clientOptions(func(dctx context.Context, network, _ string) (net.Conn, error) {
		conn, err := dial(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		conns = append(conns, ctxConn{conn, stop})
		return conn, nil
	})...)
	if err != nil {
		return &DeliveryError{Receiver: e.name, Err: fmt.Errorf("SMTP client: %w", err)}
	}
	err = c.DialAndSendWithContext(ctx, msg)
	if err == nil || msg.IsDelivered() {
		return nil // the server took it: a failed QUIT is no reason to send it again
	}
	return e.deliveryError(ctx, err)
}

// ctxConn is a connection whose Close also stops the AfterFunc that would
// have closed it.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// dialer connects to the server: TCP, or TLS from the start for EmailTLS.
func (e *Email) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := &net.Dialer{}
	if e.cfg.TLS != EmailTLS {
		return nd.DialContext
	}
	td := &tls.Dialer{NetDialer: nd, Config: &tls.Config{ServerName: e.cfg.Host, MinVersion: tls.VersionTLS12}}
	return td.DialContext
}

// clientOptions configures go-mail for e's server, dialling with dial.
func (e *Email) clientOptions(dial mail.DialContextFunc) []mail.Option {
	opts := []mail.Option{mail.WithPort(e.cfg.Port), mail.WithTimeout(e.cfg.Timeout), mail.WithDialContextFunc(dial)}
	switch e.cfg.TLS {
	case EmailTLS:
		opts = append(opts, mail.WithSSL()) // dial makes the TLS connection
	case EmailNoTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	if e.cfg.Username != "" {
		opts = append(opts, mail.WithOpportunisticSMTPAuth(mail.SMTPAuthPlain, mail.SMTPAuthLogin),
			mail.WithUsername(e.cfg.Username), mail.WithPassword(e.cfg.Password))
	}
	return opts
}

// deliveryError classifies a failed send by its SMTP reply code: 4xx
// retryable, 5xx not; without a code (dial, TLS, a connection lost or
// closed because ctx ended) retryable.
func (e *Email) deliveryError(ctx context.Context, err error) *DeliveryError {
	code := smtpCode(err)
	de := &DeliveryError{Receiver: e.name, Status: code, Retryable: code < 500, Err: err}
	if code == 0 && ctx.Err() != nil {
		de.Err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	if se, ok := errors.AsType[*mail.SendError](err); ok && code == 0 &&
		(se.Reason == mail.ErrGetSender || se.Reason == mail.ErrGetRcpts || se.Reason == mail.ErrNoUnencoded) {
		de.Retryable = false // the message itself is wrong: it will be again
	}
	if errors.Is(err, smtp.ErrUnencrypted) {
		de.Retryable = false // TLS none with credentials for a server not on localhost: a setting to fix
	}
	return de
}

// smtpCode is the SMTP reply code in err's chain, 0 if there is none.
func smtpCode(err error) int {
	if se, ok := errors.AsType[*mail.SendError](err); ok && se.ErrorCode() != 0 {
		return se.ErrorCode()
	}
	if te, ok := errors.AsType[*textproto.Error](err); ok {
		return te.Code
	}
	return 0
}

// message is n as mail: subject title(n), a plain-text body with every
// field, a Message-ID from n.ID (the same on a retry).
func (e *Email) message(n Notification, now time.Time) *mail.Msg {
	m := mail.NewMsg(mail.WithNoDefaultUserAgent())
	m.FromMailAddress(e.from)
	for _, to := range e.to {
		m.AddToMailAddress(to)
	}
	m.Subject(title(n))
	if n.ID != "" {
		m.SetMessageIDWithValue(messageID(n.ID, e.from.Address))
	} else {
		m.SetMessageID()
	}
	m.SetDateWithValue(now)
	m.SetUserAgent(UserAgent)
	m.SetGenHeader("X-Restartcoord-Fingerprint", n.Fingerprint)
	m.SetGenHeader("X-Restartcoord-Status", n.Status)
	m.SetBodyString(mail.TypeTextPlain, emailBody(n))
	return m
}

// messageID is the Message-ID (without its angle brackets) of notification
// id sent from address from: "restartcoord.<id>@<from's domain>", the id
// hashed if it holds characters a Message-ID cannot.
func messageID(id, from string) string {
	domain := "restartcoord.invalid"
	if at := strings.LastIndexByte(from, '@'); at >= 0 && at < len(from)-1 {
		domain = from[at+1:]
	}
	if !isDotAtom(id) {
		sum := sha256.Sum256([]byte(id))
		id = hex.EncodeToString(sum[:16])
	}
	return "restartcoord." + id + "@" + domain
}

// isDotAtom reports whether s is a dot-atom of letters, digits and -_+=
// (RFC 5322 3.2.3, a safe subset): non-empty, no dot first, last or twice.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_+=", r)) {
			return false
		}
	}
	return true
}

// emailBody is the plain-text body: what happened, then every field.
func emailBody(n Notification) string {
	a := n.Alert
	var b strings.Builder
	state := "FIRING"
	if n.Resolved() {
		state = "RESOLVED"
	}
	fmt.Fprintf(&b, "%s%s is %s (%s)\n\n", a.Kind, where(a), state, a.Severity)
	if a.Message != "" {
		b.WriteString(a.Message + "\n\n")
	}
	field := func(label, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(&b, "%-14s %s\n", label+":", value)
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	field("Kind", a.Kind)
	field("Severity", string(a.Severity))
	field("Status", n.Status)
	field("Node", a.NodeID)
	field("Roll", a.RollID)
	field("Message", a.Message)
	field("Count", strconv.Itoa(n.Count))
	field("First seen", stamp(n.FirstSeen))
	field("Timestamp", stamp(a.Timestamp))
	field("Source", a.Source)
	field("Alert ID", a.AlertID)
	field("Fingerprint", n.Fingerprint)
	field("Notification", n.ID)
	if n.Test {
		field("Test", "yes: sent by `restartcoord alerts test`")
	}
	if len(a.Details) > 0 {
		b.WriteString("\nDetails:\n")
		for _, l := range detailLines(a.Details) {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}
