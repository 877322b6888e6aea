// This file is copied into the wrappers whose programs the manager runs as
// cluster components (kubernetes, etcd): build.sh puts it next to their main.

package main

import (
	"os"
	"syscall"
	"unsafe"
)

// setProcessName gives the process the component's name where ps -e, top and
// pgrep look for it (/proc/PID/comm, at most 15 bytes). The manager runs each
// component through the descriptor of the file it verified (/proc/self/fd/N),
// so the kernel names the process after that path's last part: "17". The
// component's name is still argv[0].
//
// Called from an init function: the runtime keeps initialization on the main
// thread, whose name is the process's. The threads the runtime started before
// are renamed through /proc, so that a per-thread view (top -H, htop) shows
// the name too, and threads started later inherit it.
func setProcessName(name string) {
	var buf [16]byte
	copy(buf[:15], name)
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&buf[0])), 0)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, task := range tasks {
		comm, err := os.OpenFile("/proc/self/task/"+task.Name()+"/comm", os.O_WRONLY, 0)
		if err != nil {
			continue
		}
		_, _ = comm.Write([]byte(name))
		_ = comm.Close()
	}
}
