// Package browsertest drives Debian's headless Chromium from Go tests
// through the DevTools protocol: open a page, evaluate JavaScript in it,
// type, and take screenshots. Tests that use it skip where chromium is not
// installed, and fail instead when the CI variable is set, since CI
// installs it.
package browsertest
