package bus

import (
	"encoding/json"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/micro"
	"github.com/restartcoord/restartcoord/schema"
)

// Respond answers a micro request with v as JSON.
func Respond(req micro.Request, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return RespondError(req, schema.Errorf(schema.CodeInternal, "encode reply: %v", err))
	}
	return req.Respond(data)
}

// respondRaw answers a micro request by publishing on its reply subject:
// safe from any goroutine (micro's Request.Respond records its outcome in
// the request, which micro's own goroutine reads once the handler returned).
func respondRaw(c *Conn, req micro.Request, data []byte, hdr nats.Header) error {
	if req.Reply() == "" {
		return nil
	}
	return c.PublishMsg(&nats.Msg{Subject: req.Reply(), Data: data, Header: hdr})
}

// replyValue answers with v as JSON, or the contract's error.
func replyValue(c *Conn, req micro.Request, v any, err error) error {
	if err == nil {
		data, merr := json.Marshal(v)
		if merr == nil {
			return respondRaw(c, req, data, nil)
		}
		err = schema.Errorf(schema.CodeInternal, "encode reply: %v", merr)
	}
	e := schema.AsError(err)
	body, _ := json.Marshal(schema.NewEnvelope(e))
	return respondRaw(c, req, body, nats.Header{
		micro.ErrorHeader:     []string{e.Message},
		micro.ErrorCodeHeader: []string{strconv.Itoa(e.Code.Status())},
	})
}

// RespondError answers with the contract's error: the micro service error
// headers (Nats-Service-Error, Nats-Service-Error-Code) and the envelope as
// body, so `nats req` shows both.
func RespondError(req micro.Request, err error) error {
	e := schema.AsError(err)
	body, _ := json.Marshal(schema.NewEnvelope(e))
	return req.Error(strconv.Itoa(e.Code.Status()), e.Message, body)
}
