//! The intake over gRPC (tonic): `fluxtrace.v1.PromotionService` from
//! `proto/fluxtrace/v1/promotion.proto` and `fluxtrace.v1.WorkloadService` (what runs now,
//! [`crate::workload`]) from `workload.proto`, compiled by `build.rs` with protox (no system
//! `protoc`).
//!
//! Same semantics as the HTTP API, through the same [`Intake`]: a report is converted to the
//! model's [`PromotionReport`] and validated by [`crate::sources::promotion::validate`], so the
//! messages name the same fields. Credentials: metadata `authorization: Bearer <token>`.
//! Codes: `UNAUTHENTICATED`, `INVALID_ARGUMENT`, `NOT_FOUND`, `UNAVAILABLE`; messages over
//! [`MAX_BODY_BYTES`] are refused by tonic (`OUT_OF_RANGE`, or `RESOURCE_EXHAUSTED` when
//! compressed).

use std::future::Future;

use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::{Intake, IntakeError, MAX_BODY_BYTES};
use crate::model::{ArtifactRef, PipelineRef, PromotionReport};
use crate::sources::promotion::{self, ReportError};
use crate::story::Story;

/// The generated messages, server and client.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("fluxtrace.v1");
}

use proto::promotion_service_server::{PromotionService, PromotionServiceServer};
use proto::workload_service_server::{WorkloadService, WorkloadServiceServer};

/// The `route` labels of `fluxtrace_intake_requests_total`.
pub const ROUTE_REPORT: &str = "grpc_report";
pub const ROUTE_GET: &str = "grpc_get";
pub const ROUTE_WORKLOADS: &str = "grpc_workloads_list";
pub const ROUTE_WORKLOAD_STORY: &str = "grpc_workloads_explain";

impl From<IntakeError> for Status {
    fn from(e: IntakeError) -> Status {
        let msg = e.to_string();
        match e {
            IntakeError::Unauthorized(_) => Status::unauthenticated(msg),
            IntakeError::TooLarge => Status::out_of_range(msg),
            IntakeError::Body(_)
            | IntakeError::NotUtf8
            | IntakeError::Report(_)
            | IntakeError::FluxEvent(_)
            | IntakeError::Query { .. }
            | IntakeError::Path { .. } => Status::invalid_argument(msg),
            IntakeError::TooManyOpen { .. } => Status::resource_exhausted(msg),
            IntakeError::NotFound(_) => Status::not_found(msg),
            IntakeError::Unavailable | IntakeError::ReadOnly | IntakeError::NotStored(_) => {
                Status::unavailable(msg)
            }
            IntakeError::Workload(crate::workload::WorkloadError::Replay) => {
                Status::unavailable(msg)
            }
            IntakeError::Workload(_) => Status::not_found(msg),
        }
    }
}

/// Converts a protobuf report to the model's, then validates it like a JSON body.
pub fn report_from_proto(p: proto::PromotionReport) -> Result<PromotionReport, ReportError> {
    let time = timestamp("time", p.time.as_deref())?;
    let commit_time = timestamp("commit_time", p.commit_time.as_deref())?;
    promotion::validate(PromotionReport {
        id: p.id,
        environment: p.environment,
        revision: p.revision,
        artifact: p.artifact.map(|a| ArtifactRef {
            repository: a.repository,
            tag: a.tag,
            digest: a.digest,
        }),
        app: p.app,
        actor: p.actor,
        pipeline: p.pipeline.map(pipeline_from_proto),
        traceparent: p.traceparent,
        time,
        commit_time,
        promoted_from: p.promoted_from,
    })
}

/// An optional RFC 3339 field; empty counts as unset.
fn timestamp(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<jiff::Timestamp>, ReportError> {
    match value.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|e: jiff::Error| ReportError::Field {
                field,
                reason: format!("expected an RFC 3339 timestamp: {e}"),
            }),
    }
}

fn pipeline_from_proto(p: proto::Pipeline) -> PipelineRef {
    PipelineRef {
        name: p.name,
        run_id: p.run_id,
        url: p.url,
    }
}

fn pipeline_to_proto(p: PipelineRef) -> proto::Pipeline {
    proto::Pipeline {
        name: p.name,
        run_id: p.run_id,
        url: p.url,
    }
}

/// The story as a protobuf message (the same fields as its JSON).
pub fn story_to_proto(s: Story) -> proto::Story {
    proto::Story {
        promotion_id: s.promotion_id,
        trace_id: s.trace_id.to_string(),
        root_span_id: s.root_span_id.to_string(),
        traceability: s.traceability.as_str().to_string(),
        environment: s.environment,
        app: s.app,
        actor: s.actor,
        pipeline: s.pipeline.map(pipeline_to_proto),
        promoted: s.promoted,
        resolved_digest: s.resolved_digest,
        cluster: s.cluster,
        start: s.start.to_string(),
        end: s.end.to_string(),
        outcome: s.outcome.as_str().to_string(),
        divergence: s.divergence.map(|d| proto::Divergence {
            stage: d.stage.as_str().to_string(),
            reason: d.reason,
            message: d.message,
            cause: d.cause,
            evidence: d.evidence,
            span_id: d.span_id.to_string(),
        }),
        stages: s
            .stages
            .into_iter()
            .map(|st| proto::StageStory {
                stage: st.stage.as_str().to_string(),
                span_id: st.span_id.to_string(),
                object: st.object,
                outcome: st.outcome.to_string(),
                start: st.start.to_string(),
                end: st.end.to_string(),
                summary: st.summary,
                events: st.events,
            })
            .collect(),
        superseded_by: s.superseded_by,
        trace_link: s.trace_link,
        commit_time: s.commit_time.map(|t| t.to_string()),
    }
}

/// `PromotionService` over an [`Intake`].
pub struct PromotionApi {
    intake: Intake,
}

fn bearer<T>(req: &Request<T>) -> Option<&[u8]> {
    req.metadata()
        .get("authorization")
        .map(tonic::metadata::MetadataValue::as_bytes)
}

impl PromotionApi {
    fn finish<T>(
        &self,
        route: &'static str,
        result: Result<T, IntakeError>,
    ) -> Result<Response<T>, Status> {
        finish(&self.intake, route, result)
    }
}

/// Counts the call and turns the result into a response.
fn finish<T>(
    intake: &Intake,
    route: &'static str,
    result: Result<T, IntakeError>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(v) => {
            intake.count(route, "ok");
            Ok(Response::new(v))
        }
        Err(e) => {
            intake.count(route, e.metric_label());
            if !matches!(e, IntakeError::NotFound(_) | IntakeError::Workload(_)) {
                tracing::debug!(message = "Intake request refused.", route, error_type = e.metric_label(), error = %e);
            }
            Err(e.into())
        }
    }
}

#[tonic::async_trait]
impl PromotionService for PromotionApi {
    async fn report(
        &self,
        request: Request<proto::ReportRequest>,
    ) -> Result<Response<proto::ReportResponse>, Status> {
        let result = async {
            self.intake.check_writable()?;
            self.intake.auth().check_bearer(bearer(&request))?;
            let report = report_from_proto(request.into_inner().report.unwrap_or_default())
                .map_err(IntakeError::from);
            if let Err(e) = &report {
                self.intake.count_decode_error("promotion", e);
            }
            let a = self.intake.report(report?).await?;
            Ok(proto::ReportResponse {
                promotion_id: a.promotion_id,
                trace_id: a.trace_id.to_string(),
                trace_link: a.trace_link,
            })
        }
        .await;
        self.finish(ROUTE_REPORT, result)
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let result = async {
            self.intake.auth().check_bearer(bearer(&request))?;
            let s = self.intake.story(request.get_ref().id.trim()).await?;
            Ok(proto::GetResponse {
                story: Some(story_to_proto(s)),
            })
        }
        .await;
        self.finish(ROUTE_GET, result)
    }
}

fn promotion_ref_to_proto(p: crate::workload::PromotionRef) -> proto::PromotionRef {
    proto::PromotionRef {
        id: p.id,
        actor: p.actor,
        environment: p.environment,
        app: p.app,
        traceability: p.traceability,
        outcome: p.outcome,
        diverged_at: p.diverged_at,
        reason: p.reason,
        time: p.time.to_string(),
        trace_id: p.trace_id,
        trace_link: p.trace_link,
    }
}

/// A workload as a protobuf message (the same fields as its JSON).
pub fn workload_to_proto(w: crate::workload::Workload) -> proto::Workload {
    proto::Workload {
        namespace: w.namespace,
        name: w.name,
        managed_by: w.managed_by,
        running: w
            .running
            .into_iter()
            .map(|r| proto::RunningReplicaSet {
                name: r.name,
                images: r.images,
                ready: r.ready,
            })
            .collect(),
        delivered_by: w.delivered_by.map(promotion_ref_to_proto),
        newer: w.newer.map(promotion_ref_to_proto),
    }
}

/// `WorkloadService` over an [`Intake`].
pub struct WorkloadApi {
    intake: Intake,
}

/// An optional filter field; empty counts as unset.
fn filter_field(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[tonic::async_trait]
impl WorkloadService for WorkloadApi {
    async fn list(
        &self,
        request: Request<proto::ListWorkloadsRequest>,
    ) -> Result<Response<proto::ListWorkloadsResponse>, Status> {
        let result = async {
            self.intake.auth().check_bearer(bearer(&request))?;
            let r = request.into_inner();
            let filter = crate::workload::WorkloadFilter {
                environment: filter_field(r.environment),
                namespace: filter_field(r.namespace),
                app: filter_field(r.app),
            };
            let workloads = self.intake.workloads(filter).await?;
            Ok(proto::ListWorkloadsResponse {
                workloads: workloads.into_iter().map(workload_to_proto).collect(),
            })
        }
        .await;
        finish(&self.intake, ROUTE_WORKLOADS, result)
    }

    async fn explain(
        &self,
        request: Request<proto::ExplainWorkloadRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let result = async {
            self.intake.auth().check_bearer(bearer(&request))?;
            let r = request.get_ref();
            let s = self
                .intake
                .workload_story(r.namespace.trim(), r.name.trim())
                .await?;
            Ok(proto::GetResponse {
                story: Some(story_to_proto(s)),
            })
        }
        .await;
        finish(&self.intake, ROUTE_WORKLOAD_STORY, result)
    }
}

/// The workload service, ready to add to a tonic server; set up as [`service`].
pub fn workload_service(intake: Intake) -> WorkloadServiceServer<WorkloadApi> {
    WorkloadServiceServer::new(WorkloadApi { intake })
        .max_decoding_message_size(MAX_BODY_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

/// The gRPC service, ready to add to a tonic server. Accepts and sends gzip.
pub fn service(intake: Intake) -> PromotionServiceServer<PromotionApi> {
    PromotionServiceServer::new(PromotionApi { intake })
        .max_decoding_message_size(MAX_BODY_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

/// Serves `PromotionService` on `listener` until `shutdown` completes, then finishes the calls
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service(intake.clone()))
        .add_service(workload_service(intake))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
