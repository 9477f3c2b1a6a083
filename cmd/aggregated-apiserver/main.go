// Command aggregated-apiserver serves the subresources.kubeopencode.io API
// group, through which users enable, show and disable Agent share links
// under RBAC.
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"

	"github.com/kubeopencode/share/cmd/aggregated-apiserver/app"
)

func main() {
	cmd := app.NewServerCommand(app.NewOptions())
	cmd.SetContext(genericapiserver.SetupSignalContext())
	os.Exit(cli.Run(cmd))
}
