// Command pause is the sandbox ("pause") container of the real test node:
// it holds a pod's namespaces and does nothing until it is told to stop.
// The node builds its own so that it needs no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
