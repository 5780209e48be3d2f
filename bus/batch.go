package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/restartcoord/restartcoord/schema"
)

// MaxBatch is the most journal entries AppendBatch writes at once (the
// server's limit is 1000).
const MaxBatch = 256

// JetStream error code of "atomic publish batch contains duplicate message id".
const jsErrAtomicDuplicate = 10201

// AppendBatch writes entries to the node's journal atomically, all or none
// (JetStream atomic batch publish), each with its message id, and returns
// the stream sequence of the last. A batch whose message ids are already
// stored is not stored twice: ErrJournalDuplicate is returned with the node's
// last journal sequence.
func (s *Store) AppendBatch(ctx context.Context, nodeID string, msgIDs []string, entries []*schema.JournalEntry) (uint64, error) {
	switch {
	case len(entries) == 0:
		return 0, nil
	case len(entries) != len(msgIDs):
		return 0, fmt.Errorf("bus: %d entries and %d message ids", len(entries), len(msgIDs))
	case len(entries) > MaxBatch:
		return 0, fmt.Errorf("bus: batch of %d entries is above %d", len(entries), MaxBatch)
	case len(entries) == 1:
		return s.Append(ctx, nodeID, msgIDs[0], entries[0])
	}
	subj := schema.JournalSubject(nodeID)
	batchID := uuid.NewString()
	for i, e := range entries {
		data, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		m.Header.Set("Nats-Batch-Id", batchID)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if msgIDs[i] != "" {
			m.Header.Set(nats.MsgIdHdr, msgIDs[i])
		}
		if i < len(entries)-1 {
			if err := s.conn.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("bus: journal batch: %w", err)
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		reply, err := s.conn.RequestMsgWithContext(ctx, m)
		if err != nil {
			return 0, fmt.Errorf("bus: journal batch commit: %w", err)
		}
		var ack struct {
			Seq   uint64 `json:"seq"`
			Count int    `json:"count"`
			Error *struct {
				Code        int    `json:"code"`
				ErrCode     int    `json:"err_code"`
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return 0, fmt.Errorf("bus: journal batch ack %q: %w", reply.Data, err)
		}
		if ack.Error != nil {
			if ack.Error.ErrCode == jsErrAtomicDuplicate {
				last, err := s.LastSeq(ctx, nodeID)
				if err != nil {
					return 0, err
				}
				return last, ErrJournalDuplicate
			}
			return 0, fmt.Errorf("bus: journal batch refused: %s (%d)", ack.Error.Description, ack.Error.ErrCode)
		}
		if ack.Count != len(entries) {
			return 0, fmt.Errorf("bus: journal batch stored %d of %d entries", ack.Count, len(entries))
		}
		return ack.Seq, nil
	}
	return 0, ErrJournalDuplicate
}
