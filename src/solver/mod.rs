//! The solver: a Dockerfile and build options in, a plan of stages and
//! steps out (and, in later pieces, the DAG, cache keys and scheduling).
//!
//! [`dispatch`] applies docker's rules (ARG and ENV scope, SHELL, USER,
//! WORKDIR, CMD/ENTRYPOINT interplay, ONBUILD, history) to decide what every
//! step runs with and what config each stage ends with. It does no I/O
//! except through the base-config resolver its caller passes in.

pub mod dispatch;
pub mod graph;
pub mod keys;

pub use dispatch::{
    plan, Base, CopyStep, FromSource, Plan, PlanError, PlanOptions, Platform, StagePlan, Step,
    StepKind,
};
