# Credentials and, when not set here, the region come from the standard AWS
# sources: AWS_PROFILE / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+
# AWS_SESSION_TOKEN), ~/.aws/config, SSO or an instance/task role. Nothing
# secret belongs in this stack or in its variables.
provider "aws" {
  region = var.region

  # Every taggable resource gets these; resources add only Name and Role.
  default_tags {
    tags = local.common_tags
  }
}
