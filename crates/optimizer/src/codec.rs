//! How Tarn's own plan nodes, expressions and planner-made functions travel to another
//! process (a worker of a distributed query): a [`PhysicalExtensionCodec`] for
//! DataFusion's plan serialization.
//!
//! Each encoding is one tag byte; a node's inputs are serialized by DataFusion itself.
//! Covered: [`NullableSideExec`]. The functions the planner makes travel by name (see
//! [`worker_functions`]). Nodes that keep state shared between operators (the probe key
//! filter, shared subplans) have no encoding on purpose: a plan holding them cannot be
//! split across processes. Tarn's own expressions (the narrowing conjunction, lazy
//! `AND`/`OR`) have none either: the codec datafusion-distributed composes (DataFusion's
//! `ComposedPhysicalExtensionCodec`) never passes an expression on to a user's codec, so
//! plans holding them stay on the coordinator.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::avg::DecimalAverage;
use crate::decimal::{DecimalArithmetic, Op};
use crate::like::LikeParts;
use crate::outerjoin::NullableSideExec;

const NULLABLE_SIDE: u8 = 1;

/// The codec of Tarn's plan nodes and expressions (see the module documentation).
#[derive(Debug, Default)]
pub struct TarnCodec;

fn malformed(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!(
        "a serialized {what} of Tarn's is malformed (are the coordinator and the worker the same Tarn version?)"
    ))
}

fn split(buf: &[u8]) -> Result<(u8, &[u8])> {
    buf.split_first()
        .map(|(tag, rest)| (*tag, rest))
        .ok_or_else(|| malformed("plan part"))
}

impl PhysicalExtensionCodec for TarnCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (split(buf)?, inputs) {
            ((NULLABLE_SIDE, _), [input]) => Ok(Arc::new(NullableSideExec::new(Arc::clone(input)))),
            _ => Err(malformed("plan node")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.downcast_ref::<NullableSideExec>().is_some() {
            buf.push(NULLABLE_SIDE);
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "plan node {} cannot run in another process",
            node.name()
        )))
    }
}

/// The functions Tarn's planner makes, as a worker registers them by name.
///
/// A distributed plan sends every function by name: datafusion-distributed's own codec
/// comes first and claims every function, so a codec of Tarn's is never asked. These
/// copies take what the planner's carried from the call itself: the result type from the
/// call's return field (decimal arithmetic, the decimal average), the parts from the
/// pattern argument (`LIKE` by parts).
pub fn worker_functions() -> Vec<ScalarUDF> {
    let decimal = |op| {
        ScalarUDF::new_from_impl(DecimalArithmetic {
            op,
            result: DataType::Null,
            signature: Signature::any(2, Volatility::Immutable),
        })
    };
    vec![
        decimal(Op::Add),
        decimal(Op::Sub),
        decimal(Op::Mul),
        ScalarUDF::new_from_impl(LikeParts {
            parts: Vec::new(),
            signature: Signature::any(2, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(DecimalAverage::new(DataType::Null)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::PhysicalExpr;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    /// Plans `sql` with Tarn's rules over a small table, sends the physical plan through
    /// the codec and back, and checks the plan reads the same and gives the same rows.
    async fn round_trip(sql: &str, expect_in_plan: &[&str]) {
        let state = crate::test_state(2, |_| {}).build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql(
            "CREATE TABLE t AS VALUES \
             (1, 0, 'apple pie', CAST(1.25 AS DECIMAL(10,2))), \
             (2, 3, 'banana', CAST(2.50 AS DECIMAL(10,2))), \
             (3, 0, 'cherry apple tart', NULL), \
             (4, 8, NULL, CAST(4.00 AS DECIMAL(10,2)))",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        let found = tarn_parts(&plan);
        for part in expect_in_plan {
            assert!(found.contains(part), "{part} not in {found:?}:\n{shown}");
        }
        let bytes =
            physical_plan_to_bytes_with_extension_codec(Arc::clone(&plan), &TarnCodec).unwrap();
        // Decoded where only DataFusion's functions and the worker's copies are known.
        let worker = SessionContext::new();
        for f in worker_functions() {
            worker.register_udf(f);
        }
        let back =
            physical_plan_from_bytes_with_extension_codec(&bytes, &worker.task_ctx(), &TarnCodec)
                .unwrap();
        let back_shown = datafusion::physical_plan::displayable(back.as_ref())
            .indent(true)
            .to_string();
        assert_eq!(shown, back_shown);
        let expected = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let got = datafusion::physical_plan::collect(back, ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&got)
                .unwrap()
                .to_string()
        );
    }

    /// The names of Tarn's node, expression and function types in `plan`.
    fn tarn_parts(plan: &Arc<dyn ExecutionPlan>) -> Vec<&'static str> {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::physical_expr::ScalarFunctionExpr;
        let mut found = Vec::new();
        plan.apply(|node| {
            if node.downcast_ref::<NullableSideExec>().is_some() {
                found.push("NullableSideExec");
            }
            node.apply_expressions(&mut |e: &Arc<dyn PhysicalExpr>| {
                e.apply(|e| {
                    if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
                        let inner = f.fun().inner();
                        if inner.downcast_ref::<DecimalArithmetic>().is_some() {
                            found.push("DecimalArithmetic");
                        }
                        if inner.downcast_ref::<LikeParts>().is_some() {
                            found.push("LikeParts");
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })?;
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    #[tokio::test]
    async fn planner_functions_travel() {
        round_trip(
            "SELECT column1, column4 + column4, column4 * column4, column4 - 1 FROM t \
             WHERE column3 LIKE '%apple%t%' ORDER BY 1",
            &["DecimalArithmetic", "LikeParts"],
        )
        .await;
    }

    #[tokio::test]
    async fn outer_join_sides_travel() {
        round_trip(
            "SELECT a.column1, b.column2 FROM t a \
             LEFT JOIN (SELECT * FROM t WHERE column2 = 3) b ON a.column1 = b.column1 \
             ORDER BY b.column2 NULLS LAST, a.column1",
            &["NullableSideExec"],
        )
        .await;
    }

    #[test]
    fn a_node_with_shared_state_is_refused_by_name() {
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                arrow::datatypes::Schema::empty(),
            )));
        let mut buf = Vec::new();
        // EmptyExec is DataFusion's own: the codec is not asked about it, so ask directly.
        let err = TarnCodec
            .try_encode(
                plan,
                &mut buf,
                &datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("EmptyExec"), "{err}");
    }
}
