//go:build !linux

package process

import "syscall"

// sysProcAttr puts each instance in its own process group. Only Linux can
// tie the child's life to edge's (Pdeathsig).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
