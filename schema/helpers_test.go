package schema_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/restartcoord/restartcoord/schema"
)

// wantErr checks err against an expected contract error: code "" means no
// error; field is compared with Field() exactly.
func wantErr(t *testing.T, err error, code schema.Code, field string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %s (field %q)", code, field)
	}
	var e *schema.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %T %v, want a *schema.Error", err, err)
	}
	if e.Code != code {
		t.Errorf("got code %s, want %s (error: %v)", e.Code, code, err)
	}
	if e.Field() != field {
		t.Errorf("got field %q, want %q (error: %v)", e.Field(), field, err)
	}
	if e.Message == "" {
		t.Errorf("got empty message, want one")
	}
}

// decodeCase is one case of a request decoding table. code "" means the
// body is accepted; want, if set, is the value it must decode to.
type decodeCase[T any] struct {
	name  string
	body  string
	code  schema.Code
	field string
	want  *T
}

// runDecode runs a decoding table for the request type T, starting each
// decode from def(), either with Decode or (prefix != "") DecodeArgs.
func runDecode[T any, P interface {
	*T
	schema.Validator
}](t *testing.T, def func() T, prefix string, cases []decodeCase[T]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := def()
			var err error
			if prefix == "" {
				err = schema.Decode([]byte(tc.body), P(&v))
			} else {
				err = schema.DecodeArgs([]byte(tc.body), P(&v), prefix)
			}
			wantErr(t, err, tc.code, tc.field)
			if tc.code == "" && tc.want != nil && !reflect.DeepEqual(v, *tc.want) {
				t.Errorf("got %+v, want %+v", v, *tc.want)
			}
		})
	}
}

// with returns def() changed by f, for want values.
func with[T any](def func() T, f func(*T)) *T {
	v := def()
	f(&v)
	return &v
}

func ptr[T any](v T) *T { return &v }

// long is a string of n letters.
func long(n int) string { return strings.Repeat("a", n) }

// commonBodyCases are the refusals every request type shares: the body is
// not one JSON object. field is "" for Decode and prefix for DecodeArgs.
func commonBodyCases[T any](field string) []decodeCase[T] {
	return []decodeCase[T]{
		{name: "array body", body: `[]`, code: schema.CodeInvalidParameters, field: field},
		{name: "array of object", body: `[{}]`, code: schema.CodeInvalidParameters, field: field},
		{name: "string body", body: `"x"`, code: schema.CodeInvalidParameters, field: field},
		{name: "number body", body: `42`, code: schema.CodeInvalidParameters, field: field},
		{name: "null body", body: `null`, code: schema.CodeInvalidParameters, field: field},
		{name: "malformed unterminated", body: `{"a":`, code: schema.CodeInvalidParameters, field: field},
		{name: "malformed unquoted key", body: `{a:1}`, code: schema.CodeInvalidParameters, field: field},
		{name: "malformed trailing comma", body: `{"a":1,}`, code: schema.CodeInvalidParameters, field: field},
		{name: "trailing garbage", body: `{} x`, code: schema.CodeInvalidParameters, field: field},
		{name: "two objects", body: `{}{}`, code: schema.CodeInvalidParameters, field: field},
		{name: "object then number", body: `{} 1`, code: schema.CodeInvalidParameters, field: field},
		{name: "unknown field", body: `{"no_such_field":1}`, code: schema.CodeInvalidParameters,
			field: join(field, "no_such_field")},
	}
}

func join(prefix, f string) string {
	if prefix == "" {
		return f
	}
	return prefix + "." + f
}
