//! tarn-optimizer's integration tests, one binary (each test binary links DataFusion
//! whole): the rules' plan shapes (`plans`) and the README's list of planner settings
//! (`settings_doc`).

mod plans;
mod settings_doc;
