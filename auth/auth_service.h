// The gRPC Auth service: token administration and the audit log.
#ifndef STEPDB_AUTH_AUTH_SERVICE_H_
#define STEPDB_AUTH_AUTH_SERVICE_H_

#include "auth/token_authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"

namespace stepdb::auth {

class AuthService final : public v1::Auth::CallbackService {
 public:
  // `authorizer` must outlive the service; nullptr (auth off) makes every
  // RPC fail with FAILED_PRECONDITION.
  explicit AuthService(TokenAuthorizer* authorizer) : authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* CreateToken(
      grpc::CallbackServerContext* context,
      const v1::CreateTokenRequest* request,
      v1::CreateTokenResponse* response) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* context,
                                       const v1::ListTokensRequest* request,
                                       v1::ListTokensResponse* response) override;
  grpc::ServerUnaryReactor* RevokeToken(
      grpc::CallbackServerContext* context,
      const v1::RevokeTokenRequest* request,
      v1::RevokeTokenResponse* response) override;
  grpc::ServerUnaryReactor* ReadAudit(grpc::CallbackServerContext* context,
                                      const v1::ReadAuditRequest* request,
                                      v1::ReadAuditResponse* response) override;

 private:
  TokenAuthorizer* const authorizer_;
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_AUTH_SERVICE_H_
