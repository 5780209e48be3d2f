package bus

import (
	"encoding/json"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/restartcoord/restartcoord/schema"
)

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
