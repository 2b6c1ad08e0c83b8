package process

import "syscall"

// sysProcAttr puts each instance in its own process group, so a stop
// reaches everything it started, and has the kernel kill it if edge dies
// without stopping it (SIGKILL, a crash): no orphan keeps the port.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
