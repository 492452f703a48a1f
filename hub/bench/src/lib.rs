//! hmonitor's benchmark tools, kept out of the production hub: `hmonitor-load` drives a real hub
//! with simulated agents and browsers; `hmonitor-history-bench` times the history store. See
//! BENCHMARKS.md for what they measured and how to run them.
