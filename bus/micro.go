package bus

import (
	"encoding/json"
	"strconv"

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

// RespondError answers with the contract's error: the micro service error
// headers (Nats-Service-Error, Nats-Service-Error-Code) and the envelope as
// body, so `nats req` shows both.
func RespondError(req micro.Request, err error) error {
	e := schema.AsError(err)
	body, _ := json.Marshal(schema.NewEnvelope(e))
	return req.Error(strconv.Itoa(e.Code.Status()), e.Message, body)
}
