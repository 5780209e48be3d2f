package node

import "runtime"

func lockOSThread() { runtime.LockOSThread() }
