package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
)

// Validator is implemented by every request type: it checks ranges and
// enums after decoding and returns an INVALID_PARAMETERS *Error naming the
// field.
type Validator interface{ Validate() error }

// Decode decodes data strictly into v, which holds the defaults beforehand:
// an empty body means {}, the body must be one JSON object, unknown fields,
// null values and wrong types are refused, and v.Validate runs last. Every
// failure is an INVALID_PARAMETERS *Error naming the field where there is one.
func Decode(data []byte, v Validator) error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	if err := decodeObject(data, v, ""); err != nil {
		return err
	}
	return v.Validate()
}

// DecodeArgs decodes a nested object (such as a task op's args) strictly,
// naming fields as prefix.field.
func DecodeArgs(data []byte, v Validator, prefix string) error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	if err := decodeObject(data, v, prefix); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Field() != "" && prefix != "" {
			e.Details["field"] = prefix + "." + e.Field()
		}
		return err
	}
	return nil
}

func decodeObject(data []byte, v any, prefix string) error {
	name := func(f string) string {
		if prefix == "" {
			return f
		}
		if f == "" {
			return prefix
		}
		return prefix + "." + f
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return Invalid(name(""), "malformed JSON at byte %d: %v", syn.Offset, syn)
		}
		return Invalid(name(""), "body must be a JSON object")
	}
	if fields == nil {
		return Invalid(name(""), "body must be a JSON object, got null")
	}
	if err := checkKeys(fields, reflect.TypeOf(v), name); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ):
			f := typ.Field
			if f == "" {
				f = name("")
			} else {
				f = name(f)
			}
			return Invalid(f, "%s must be %s, got %s", f, kindName(typ.Type.Kind().String()), typ.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json has no typed error for this one; its text is stable.
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return Invalid(name(f), "unknown field %q", name(f))
		default:
			var fe *Error
			if errors.As(err, &fe) {
				return fe
			}
			return Invalid(name(""), "invalid body: %v", err)
		}
	}
	return nil
}

func kindName(k string) string {
	switch k {
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "float64", "float32", "int", "int64", "int32", "uint64", "uint32", "uint":
		return "a number"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "a " + k
}

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// checkKeys refuses, at any depth of the target type's structs, a key that
// is not exactly a field's JSON name (encoding/json would accept any case)
// and a null value (which encoding/json would silently skip).
func checkKeys(fields map[string]json.RawMessage, t reflect.Type, name func(string) string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	known := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		known[tag] = f.Type
	}
	for k, raw := range fields {
		ft, ok := known[k]
		if !ok {
			return Invalid(name(k), "unknown field %q", name(k))
		}
		trimmed := bytes.TrimSpace(raw)
		if bytes.Equal(trimmed, []byte("null")) {
			return Invalid(name(k), "%s must not be null (leave it out for the default)", name(k))
		}
		inner := ft
		for inner.Kind() == reflect.Pointer {
			inner = inner.Elem()
		}
		if inner.Kind() == reflect.Struct && inner != rawMessageType && len(trimmed) > 0 && trimmed[0] == '{' {
			var sub map[string]json.RawMessage
			if err := json.Unmarshal(trimmed, &sub); err == nil {
				parent := name(k)
				if err := checkKeys(sub, inner, func(f string) string {
					if f == "" {
						return parent
					}
					return parent + "." + f
				}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
