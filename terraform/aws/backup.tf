# pgBackRest's repository: one private S3 bucket per cluster, written only by
# the database hosts through their instance profile. No access keys exist:
# pgBackRest (repo1-s3-key-type=auto) reads the role's temporary credentials
# from the instance metadata service (IMDSv2, see compute.tf).

# --- Bucket -------------------------------------------------------------------

# Bucket names are global across all AWS accounts, so AWS appends a unique
# suffix (26 characters) to the prefix. A prefix may hold at most 37
# characters: the stack's name is cut to 29 to leave room for "-backup-".
resource "aws_s3_bucket" "backup" {
  bucket_prefix = "${substr(local.name, 0, 29)}-backup-"

  # false: destroy fails while the bucket holds objects (or object versions),
  # so tearing down the cluster never deletes its backups by accident.
  force_destroy = var.backup_bucket_force_destroy

  tags = {
    Name = "${local.name}-backup"
    Role = "backup"
  }
}

resource "aws_s3_bucket_public_access_block" "backup" {
  bucket = aws_s3_bucket.backup.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs disabled: the account owns every object, access is decided by IAM only.
resource "aws_s3_bucket_ownership_controls" "backup" {
  bucket = aws_s3_bucket.backup.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Versioning keeps an overwritten or deleted backup file recoverable for
# backup_noncurrent_version_days (see the lifecycle rule below).
resource "aws_s3_bucket_versioning" "backup" {
  bucket = aws_s3_bucket.backup.id

  versioning_configuration {
    status = "Enabled"
  }
}

# SSE-S3 (AES256) unless backup_kms_key_arn names a customer managed key. The
# S3 bucket key cuts the KMS requests (and their cost) for the many WAL files.
resource "aws_s3_bucket_server_side_encryption_configuration" "backup" {
  bucket = aws_s3_bucket.backup.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.backup_kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = local.backup_kms_key_arn
    }
    bucket_key_enabled = local.backup_kms_key_arn != null
  }
}

# pgBackRest's own retention (repo1-retention-*) decides which backups and WAL
# are kept; the objects it expires become noncurrent versions, which S3 then
# removes after backup_noncurrent_version_days. Uploads pgBackRest abandoned
# midway (a host lost during a backup) are cleaned up after 7 days.
resource "aws_s3_bucket_lifecycle_configuration" "backup" {
  bucket = aws_s3_bucket.backup.id

  rule {
    id     = "noncurrent-versions-and-incomplete-uploads"
    status = "Enabled"

    # Empty filter: the whole bucket.
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.backup_noncurrent_version_days
    }

    # Delete markers left alone once their last noncurrent version expired.
    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # A lifecycle rule on noncurrent versions needs versioning in place first.
  depends_on = [aws_s3_bucket_versioning.backup]
}

# --- Database hosts' role -----------------------------------------------------

# Only EC2 may assume the role; the primary and the replicas get it through
# the instance profile (the bastion has none).
data "aws_iam_policy_document" "db_assume_role" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "db" {
  name               = "${local.name}-db"
  description        = "Database hosts of ${local.name}: read and write the pgBackRest repository bucket."
  assume_role_policy = data.aws_iam_policy_document.db_assume_role.json

  tags = {
    Name = "${local.name}-db"
  }
}

resource "aws_iam_instance_profile" "db" {
  name = "${local.name}-db"
  role = aws_iam_role.db.name

  tags = {
    Name = "${local.name}-db"
  }
}

# What pgBackRest needs and nothing more: list the bucket (and find its
# region), read, write and delete its objects. No other bucket, no bucket
# configuration, no object versions.
data "aws_iam_policy_document" "db_backup" {
  statement {
    sid       = "ListBackupBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.backup.arn]
  }

  statement {
    sid       = "ReadWriteBackupObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.backup.arn}/*"]
  }

  # With a customer managed key, S3 encrypts and decrypts each object on the
  # caller's behalf: the role needs the key, and only that key, for it.
  dynamic "statement" {
    for_each = local.backup_kms_key_arn == null ? [] : [local.backup_kms_key_arn]

    content {
      sid       = "UseBackupKmsKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "db_backup" {
  name   = "${local.name}-backup"
  role   = aws_iam_role.db.id
  policy = data.aws_iam_policy_document.db_backup.json
}
