//! End-to-end test harness: brings up (or attaches to) the local peers and gives
//! each test an isolated namespace and repository.
