// Package app holds the kubeopencode controller's command: its options,
// flags and the wiring of the controller-runtime manager that runs the Agent
// controller of package controller.
package app
