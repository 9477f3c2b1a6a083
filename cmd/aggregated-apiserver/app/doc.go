// Package app holds the command of the aggregated API server: its options,
// their flags, validation and completion into a configuration, and Run, which
// serves the API and the other parts of the server process until the context
// ends.
package app
