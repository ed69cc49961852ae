locals {
  name = "${var.name_prefix}-${var.environment}"

  common_tags = merge(var.tags, {
    Project     = var.name_prefix
    Environment = var.environment
    ManagedBy   = "terraform"
  })

  # Zones: the ones given, else the first availability_zone_count available
  # zones of the region (the data source returns them sorted by name).
  region_azs = data.aws_availability_zones.available.names
  azs = length(var.availability_zones) > 0 ? var.availability_zones : slice(
    local.region_azs, 0, min(var.availability_zone_count, length(local.region_azs))
  )

  # The VPC block is cut into 16 equal subnets: number 0 is public, numbers
  # 1..6 are the private subnets, one per zone. The rest stay free.
  public_subnet_cidr = cidrsubnet(var.vpc_cidr, 4, 0)
  private_subnet_cidrs = {
    for index, az in local.azs : az => cidrsubnet(var.vpc_cidr, 4, index + 1)
  }

  # Placement: the primary in the first zone, replica i in zone (i + 1) modulo
  # the number of zones, so the first replica never shares the primary's zone
  # when there are two or more zones.
  primary_az  = local.azs[0]
  replica_azs = [for index in range(var.replica_count) : local.azs[(index + 1) % length(local.azs)]]

  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.ubuntu[0].id

  ubuntu_codenames = {
    "22.04" = "jammy"
    "24.04" = "noble"
  }

  root_volume_kms_key_id = var.root_volume_kms_key_id != "" ? var.root_volume_kms_key_id : null

  # null: the backup bucket uses SSE-S3 (AES256) instead of a KMS key.
  backup_kms_key_arn = var.backup_kms_key_arn != "" ? var.backup_kms_key_arn : null

  # The user the Ubuntu images create for the key pair.
  ssh_user = "ubuntu"
}
