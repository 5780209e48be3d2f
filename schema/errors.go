package schema

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Code is a contract error code.
type Code string

// Error codes of CONTRACT.md.
const (
	CodeInvalidParameters Code = "INVALID_PARAMETERS"
	CodeUnauthorized      Code = "UNAUTHORIZED"
	CodeNotFound          Code = "NOT_FOUND"
	CodeRestartInProgress Code = "RESTART_IN_PROGRESS"
	CodeSystemNotReady    Code = "SYSTEM_NOT_READY"
	CodeStaleFencingToken Code = "STALE_FENCING_TOKEN"
	CodeExpired           Code = "EXPIRED"
	CodeBufferFull        Code = "BUFFER_FULL"
	CodeRateLimited       Code = "RATE_LIMITED"
	CodeTimeoutExceeded   Code = "TIMEOUT_EXCEEDED"
	CodeStateCorruption   Code = "STATE_CORRUPTION"
	CodeProcessFailed     Code = "PROCESS_FAILED"
	CodeNotLeader         Code = "NOT_LEADER"
	CodeInternal          Code = "INTERNAL"
)

var codeStatus = map[Code]int{
	CodeInvalidParameters: 400, CodeUnauthorized: 403, CodeNotFound: 404,
	CodeRestartInProgress: 409, CodeSystemNotReady: 409, CodeStaleFencingToken: 409,
	CodeExpired: 410, CodeBufferFull: 429, CodeRateLimited: 429, CodeTimeoutExceeded: 504,
	CodeStateCorruption: 500, CodeProcessFailed: 500, CodeNotLeader: 503, CodeInternal: 500,
}

// Status is the HTTP-like status of the code, sent as Nats-Service-Error-Code.
func (c Code) Status() int {
	if s, ok := codeStatus[c]; ok {
		return s
	}
	return 500
}

// Known reports whether c is a code of the contract.
func (c Code) Known() bool { _, ok := codeStatus[c]; return ok }

// Error is the error object of the envelope. It is also a Go error, so the
// same value travels from a validator to the wire and back to a caller.
type Error struct {
	Code    Code           `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is makes errors.Is(err, &Error{Code: X}) match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code && t.Message == ""
	}
	return false
}

// Field is the offending field named in details, or "".
func (e *Error) Field() string {
	if f, ok := e.Details["field"].(string); ok {
		return f
	}
	return ""
}

// Envelope is the body of every error reply.
type Envelope struct {
	Type  string `json:"type"`
	Error *Error `json:"error"`
}

// NewEnvelope wraps e in the error envelope.
func NewEnvelope(e *Error) Envelope { return Envelope{Type: TypeError, Error: e} }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid builds an INVALID_PARAMETERS error naming field.
func Invalid(field, format string, args ...any) *Error {
	e := Errorf(CodeInvalidParameters, format, args...)
	if field != "" {
		e.Details = map[string]any{"field": field}
	}
	return e
}

// WithDetail returns e with one more detail set.
func (e *Error) WithDetail(key string, v any) *Error {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = v
	return e
}

// AsError converts any error to a contract *Error: an *Error found in the
// chain is returned as is, anything else becomes INTERNAL.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// ParseEnvelope decodes an error envelope; ok is false when data is not one.
func ParseEnvelope(data []byte) (*Error, bool) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Type != TypeError || env.Error == nil || env.Error.Code == "" {
		return nil, false
	}
	return env.Error, true
}
