// Command kubectl-agent is kubeoc as a kubectl plugin: kubectl runs it for
// `kubectl agent …`, which does what `kubeoc agent …` does.
//
// Installed (or linked) as kubectl_complete-agent beside it, the same
// binary completes `kubectl agent …`: kubectl runs that name with the words
// after `kubectl agent` to complete them.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubeopencode/share/pkg/cli"
)

// completionName is the name kubectl looks up on PATH to complete the
// plugin's arguments.
var completionName = strings.Replace(cli.PluginName, "-", "_complete-", 1)

func main() {
	cmd := cli.NewDefaultPluginCommand()
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == completionName {
		cmd.SetArgs(append([]string{cobra.ShellCompRequestCmd}, os.Args[1:]...))
	}
	if err := cmd.Execute(); err != nil {
		if !errors.Is(err, cli.ErrExit) {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
}
