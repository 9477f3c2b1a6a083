// Command controller runs the kubeopencode controller, which keeps each
// Agent's Deployment, share Secret and status.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubeopencode/share/cmd/controller/app"
)

func main() {
	cmd := app.NewControllerCommand(app.NewOptions())
	cmd.SetContext(ctrl.SetupSignalHandler())
	os.Exit(cli.Run(cmd))
}
