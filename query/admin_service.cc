#include "query/admin_service.h"

#include "proto/grpc_status.h"

#include "absl/strings/str_cat.h"

namespace stepdb::query {

AdminService::AdminService(storage::Engine* engine,
                           auth::Authorizer* authorizer,
                           storage::RunStore* runs,
                           storage::WatchEvaluator* watch)
    : engine_(engine), authorizer_(authorizer), runs_(runs), watch_(watch) {}

AdminService::~AdminService() {
  std::thread compactor;
  std::list<Worker> deleters;
  {
    // The compactor takes mu_ to finish: join it outside the lock.
    absl::MutexLock lock(&mu_);
    compactor = std::move(compactor_);
    deleters = std::move(deleters_);
  }
  if (compactor.joinable()) compactor.join();
  for (Worker& w : deleters) w.thread.join();
}

grpc::ServerUnaryReactor* AdminService::Stats(
    grpc::CallbackServerContext* context, const v1::StatsRequest* /*request*/,
    v1::StatsResponse* response) {
  if (absl::Status s = auth::Check(authorizer_, *context, auth::Rpc::kAdminStats,
                                   auth::kAllProjects);
      !s.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  const storage::EngineStats stats = engine_->Stats();
  response->set_projects(stats.projects);
  response->set_runs(stats.runs);
  response->set_series(stats.series);
  response->set_points(stats.points);
  response->set_head_points(stats.head_points);
  response->set_sealed_chunks(stats.sealed_chunks);
  response->set_bytes_on_disk(stats.bytes_on_disk);
  response->set_bytes_per_point(
      stats.points == 0 ? 0.0
                        : static_cast<double>(stats.bytes_on_disk) / stats.points);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Compact(
    grpc::CallbackServerContext* context, const v1::CompactRequest* /*request*/,
    v1::CompactResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(authorizer_, *context,
                                   auth::Rpc::kAdminCompact, auth::kAllProjects);
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  auth::AuditAction(authorizer_, *context, auth::Rpc::kAdminCompact, "",
                    absl::OkStatus(), "compaction started");
  absl::MutexLock lock(&mu_);
  if (compacting_) {
    reactor->Finish(grpc::Status(grpc::StatusCode::ABORTED,
                                 "a compaction is already running"));
    return reactor;
  }
  if (compactor_.joinable()) compactor_.join();
  compacting_ = true;
  compactor_ = std::thread([this, reactor, response] {
    auto result = engine_->Compact();
    if (result.ok()) {
      response->set_chunks_sealed(result->chunks_sealed);
      response->set_bytes_on_disk_before(result->bytes_before);
      response->set_bytes_on_disk_after(result->bytes_after);
    }
    {
      absl::MutexLock lock(&mu_);
      compacting_ = false;
    }
    reactor->Finish(result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::DeleteRun(
    grpc::CallbackServerContext* context, const v1::DeleteRunRequest* request,
    v1::DeleteResponse* response) {
  return StartDelete(context, request->project(), request->run(), response);
}

grpc::ServerUnaryReactor* AdminService::DeleteProject(
    grpc::CallbackServerContext* context,
    const v1::DeleteProjectRequest* request, v1::DeleteResponse* response) {
  return StartDelete(context, request->project(), std::nullopt, response);
}

grpc::ServerUnaryReactor* AdminService::StartDelete(
    grpc::CallbackServerContext* context, std::string project,
    std::optional<std::string> run, v1::DeleteResponse* response) {
  auto* reactor = context->DefaultReactor();
  const auth::Rpc rpc =
      run ? auth::Rpc::kAdminDeleteRun : auth::Rpc::kAdminDeleteProject;
  if (absl::Status s = auth::Check(authorizer_, *context, rpc, project);
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (project.empty() || (run && run->empty())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 project.empty() ? "project: empty" : "run: empty"));
    return reactor;
  }
  // Reclaiming compacts the deleted ranges: seconds for a large project,
  // too long for a gRPC callback thread.
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, context, reactor, response, rpc, done,
                      project = std::move(project), run = std::move(run)] {
    absl::Status status = Delete(project, run, response);
    std::string detail = run ? absl::StrCat("run \"", *run, "\"") : "project";
    absl::StrAppend(&detail, ": ", response->runs(), " runs, ",
                    response->series(), " series, ", response->points(),
                    " points, ", response->run_records(), " run records");
    if (!run) absl::StrAppend(&detail, ", ", response->watch_rules(), " watch rules");
    absl::StrAppend(&detail, " deleted");
    auth::AuditAction(authorizer_, *context, rpc, project, status,
                      std::move(detail));
    reactor->Finish(status.ok() ? grpc::Status::OK : ToGrpcStatus(status));
    done->store(true);
  });
  absl::MutexLock lock(&mu_);
  for (auto it = deleters_.begin(); it != deleters_.end();) {
    if (!it->done->load()) {
      ++it;
      continue;
    }
    it->thread.join();
    it = deleters_.erase(it);
  }
  deleters_.push_back({std::move(thread), std::move(done)});
  return reactor;
}

absl::Status AdminService::Delete(const std::string& project,
                                  const std::optional<std::string>& run,
                                  v1::DeleteResponse* response) {
  response->set_bytes_on_disk_before(engine_->Stats().bytes_on_disk);
  storage::RunDeletion deletion;
  if (runs_ != nullptr) {
    auto deleted = run ? runs_->DeleteRun(project, *run)
                       : runs_->DeleteProject(project);
    if (!deleted.ok()) return deleted.status();
    deletion = *deleted;
  } else {
    auto deleted = run ? engine_->DeleteRun(project, *run)
                       : engine_->DeleteProject(project);
    if (!deleted.ok()) return deleted.status();
    deletion.data = *deleted;
    if (run && deleted->runs == 0) {
      return absl::NotFoundError(absl::StrCat("run \"", *run,
                                              "\" not found in project \"",
                                              project, "\""));
    }
  }
  response->set_runs(deletion.data.runs);
  response->set_series(deletion.data.series);
  response->set_points(deletion.data.points);
  response->set_chunks(deletion.data.chunks);
  response->set_run_records(deletion.run_records);
  if (!run) {
    // The engine deleted the rule records with the project; this drops
    // the rules from the evaluator (and any created meanwhile).
    if (watch_ != nullptr) {
      auto rules = watch_->DeleteProjectRules(project);
      if (!rules.ok()) return rules.status();
      response->set_watch_rules(*rules);
    }
    if (deletion.data.runs == 0 && deletion.run_records == 0 &&
        response->watch_rules() == 0) {
      return absl::NotFoundError(
          absl::StrCat("project \"", project, "\" has no runs and no watch rules"));
    }
  }
  if (absl::Status s = engine_->ReclaimDeleted(); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("deleted, but reclaiming the space failed (the "
                               "next deletion or compaction retries): ",
                               s.message()));
  }
  response->set_bytes_on_disk_after(engine_->Stats().bytes_on_disk);
  return absl::OkStatus();
}

}  // namespace stepdb::query
