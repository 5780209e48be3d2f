package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/restartcoord/restartcoord/schema"
)

// runState runs `state backup|backups|restore`.
func runState(ctx context.Context, args []string) error {
	return dispatch(ctx, "state", []subverb{
		{"backup", "take a snapshot of a node's state now and keep it as a backup", runStateBackup},
		{"backups", "list a node's backups (1 = newest)", runStateBackups},
		{"restore", "roll a node's state back to a backup (archives the current state first; needs --yes)", runStateRestore},
	}, args)
}

const stateBackupUsage = "restartcoord state backup NODE [--json] [-s URL] [--timeout DURATION]"

func runStateBackup(ctx context.Context, args []string) error {
	o := newOpsFlags("state backup", stateBackupUsage)
	return queryNode(ctx, o, args, stateBackupUsage, schema.OpStateBackup, within(defaultBackupWait),
		func(string) (any, error) { return schema.BackupRequest{}, nil },
		func(node string, data []byte, asJSON bool) error {
			if asJSON {
				return printRaw(data)
			}
			var s schema.SnapshotInfo
			if err := decodeReply(node, schema.OpStateBackup, data, &s); err != nil {
				return err
			}
			renderBackup(opsOut, node, &s)
			return nil
		})
}

const stateBackupsUsage = "restartcoord state backups NODE [--json] [-s URL] [--timeout DURATION]"

func runStateBackups(ctx context.Context, args []string) error {
	o := newOpsFlags("state backups", stateBackupsUsage)
	return queryNode(ctx, o, args, stateBackupsUsage, schema.OpStateBackups, within(defaultQueryWait),
		func(string) (any, error) { return schema.BackupsRequest{}, nil },
		func(node string, data []byte, asJSON bool) error {
			if asJSON {
				return printRaw(data)
			}
			var l schema.BackupList
			if err := decodeReply(node, schema.OpStateBackups, data, &l); err != nil {
				return err
			}
			if l.NodeID == "" {
				l.NodeID = node
			}
			renderBackups(opsOut, &l)
			return nil
		})
}

const stateRestoreUsage = "restartcoord state restore NODE --backup K --yes [--timeout-secs N] [--json] [-s URL] [--timeout DURATION]"

// restoreWarning is why restore needs --yes.
const restoreWarning = "state restore rolls %s back to a backup and DISCARDS every write made since it " +
	"(tasks created, changed or removed since, and their journal entries); the current state is archived " +
	"as a new backup first, so the restore itself can be undone. Run again with --yes to proceed " +
	"(see the backups with: restartcoord state backups %s)"

func runStateRestore(ctx context.Context, args []string) error {
	o := newOpsFlags("state restore", stateRestoreUsage)
	backup := o.fs.String("backup", "", "the backup to restore: its index in `state backups` (1 = newest) or its snapshot id")
	yes := o.fs.Bool("yes", false, "confirm that writes made since the backup are discarded")
	timeoutSecs := o.fs.Float64("timeout-secs", schema.DefaultRestartTimeout,
		fmt.Sprintf("seconds the graceful part of the restart may take (%d..%d)", schema.MinRestartTimeout, schema.MaxRestartTimeout))
	var timeout float64
	body := func(node string) (any, error) {
		if *backup == "" {
			return nil, usageErr("--backup is required: an index from `restartcoord state backups NODE` (1 = newest) or a snapshot id")
		}
		if len(*backup) > 128 {
			return nil, usageErr("--backup must be at most 128 characters")
		}
		if n, err := strconv.Atoi(*backup); err == nil && n < 1 {
			return nil, usageErr("--backup %d: indexes start at 1 (the newest backup)", n)
		}
		timeout = *timeoutSecs
		if math.IsNaN(timeout) || timeout < schema.MinRestartTimeout || timeout > schema.MaxRestartTimeout {
			return nil, usageErr("--timeout-secs must be %d..%d seconds, got %v", schema.MinRestartTimeout, schema.MaxRestartTimeout, timeout)
		}
		if !*yes {
			return nil, usageErr("%s", fmt.Sprintf(restoreWarning, node, node))
		}
		return schema.RestoreRequest{Backup: *backup, Confirm: true, Timeout: timeout}, nil
	}
	return queryNode(ctx, o, args, stateRestoreUsage, schema.OpStateRestore,
		func() time.Duration { return schema.Seconds(timeout) + restoreExtraWait }, body,
		func(node string, data []byte, asJSON bool) error {
			var r schema.StateRestore
			if err := decodeReply(node, schema.OpStateRestore, data, &r); err != nil {
				return err
			}
			if asJSON {
				if err := printRaw(data); err != nil {
					return err
				}
			} else {
				if r.NodeID == "" {
					r.NodeID = node
				}
				renderRestore(opsOut, &r)
			}
			if !r.Restart.Success {
				return &exitError{code: exitFailed, err: fmt.Errorf("restore of %s failed: %s", node, resultError(&r.Restart))}
			}
			return nil
		})
}
