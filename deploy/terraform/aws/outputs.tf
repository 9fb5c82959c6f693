output "agent_names" {
  description = "The agents' names, as they attach to the controller."
  value       = local.names
}

output "instance_ids" {
  description = "Instance id of each agent."
  value       = { for name, i in aws_instance.agent : name => i.id }
}
