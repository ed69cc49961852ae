# The first three outputs are the contract the API's `configure` step reads to
# build the Ansible inventory; the local stack exposes the same names.

output "bastion_eip_address" {
  description = "Public (Elastic) IP address of the bastion: the SSH entry point."
  value       = aws_eip.bastion.public_ip
}

output "primary_db_addr" {
  description = "Private IP address of the PostgreSQL primary, reached through the bastion."
  value       = aws_instance.primary.private_ip
}

output "replica_db_addresses" {
  description = "Private IP addresses of the replicas, in replica order (replica-1 first)."
  value       = aws_instance.replica[*].private_ip
}

output "ssh_user" {
  description = "SSH user on every host (Ubuntu images)."
  value       = local.ssh_user
}

output "ansible_vars" {
  description = "Stack-specific variables for the Ansible roles."
  value = tomap({
    # Where PostgreSQL clients and replicas connect from (pg_hba.conf).
    postgresql_client_cidr      = aws_vpc.this.cidr_block
    postgresql_replication_cidr = aws_vpc.this.cidr_block
    # Names the Patroni cluster and its etcd.
    pgcluster_environment = var.environment
  })
}

output "vpc_id" {
  description = "ID of the cluster's VPC."
  value       = aws_vpc.this.id
}

output "availability_zones" {
  description = "Availability zones holding a private subnet, in placement order (the primary is in the first)."
  value       = local.azs
}

output "db_security_group_id" {
  description = "ID of the database hosts' security group."
  value       = aws_security_group.db.id
}

output "bastion_private_address" {
  description = "The bastion's address on the private network (an etcd member of the Patroni cluster)."
  value       = aws_instance.bastion.private_ip
}

# Where pgBackRest keeps its repository, in the shape the local stack uses
# ({type = "posix", path = ...}) plus what an S3 repository needs. The hosts
# authenticate with their instance profile: no key is part of the output.
output "backup_repository" {
  description = "pgBackRest repository: type (s3), bucket, region, endpoint and path (the repository's directory in the bucket)."
  value = {
    type     = "s3"
    bucket   = aws_s3_bucket.backup.bucket
    region   = var.region
    endpoint = "s3.${var.region}.amazonaws.com"
    path     = "/pgcluster/${var.environment}"
  }
}
