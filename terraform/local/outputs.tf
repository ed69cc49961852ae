output "bastion_eip_address" {
  description = "Address of the bastion's public side, reachable from the root network namespace."
  value       = local.bastion_address
  depends_on  = [null_resource.bastion_sshd]
}

output "primary_db_addr" {
  description = "Private address of the primary (reachable only through the bastion)."
  value       = local.primary_address
  depends_on  = [null_resource.db_host]
}

output "replica_db_addresses" {
  description = "Private addresses of the replicas, in replica order (replica1, replica2, ...)."
  value       = local.replica_addresses
  depends_on  = [null_resource.db_host]
}

output "ssh_user" {
  description = "User to log in as on every lab host."
  value       = "root"
}

output "ansible_vars" {
  description = "Stack-specific variables for the playbook (plain data, merged into its vars)."
  value = {
    pgcluster_stack        = "local"
    pgcluster_lab          = "true"
    pgcluster_lab_root     = local.lab_dir
    pgcluster_environment  = var.environment
    postgresql_client_cidr = local.client_cidr
    # The lab hosts are this machine: use its system Python, whatever a
    # login shell's PATH says (pyenv shims, virtualenvs).
    ansible_python_interpreter = "/usr/bin/python3"
  }
}

output "private_cidr" {
  description = "The lab's private subnet (bastion and database hosts)."
  value       = local.private_cidr
}

output "namespaces" {
  description = "Network namespace of each lab host, by inventory name."
  value = merge(
    { bastion = null_resource.lab.triggers.namespace },
    { for name, host in null_resource.db_host : name => host.triggers.namespace }
  )
}

output "lab_dir" {
  description = "Directory holding this lab's state and data; removed by destroy."
  value       = local.lab_dir
}

output "bastion_private_address" {
  description = "The bastion's address on the private network (etcd member of a Patroni cluster)."
  value       = local.bastion_private
}

output "backup_repository" {
  description = "Where pgBackRest keeps this cluster's backups and archived WAL: a directory of the lab outside every host's own (it outlives them), removed by destroy."
  value = {
    type = "posix"
    path = "${local.lab_dir}/backups"
  }
}
